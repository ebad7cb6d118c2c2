"""Augmentation prompts (local and global) and the parsing of a generation into sentences.

Pure functions: no model, no Ray. A prompt is a list of chat messages; `PromptFormat` turns it
into the exact text the generator sees (the tokenizer's chat template for instruct models,
plain text otherwise) and counts its tokens.

- Local: one training sentence, after worked examples of rephrasings, reversals and direct
  inferences written in made-up words of 6+ letters (the worlds' nonsense words have 4-5, so an
  example can never state a world's fact). The examples are a prefix shared by every sentence.
- Global: the world's corpus (or one group of its documents) as a shared prefix, then one target
  document and the instruction. `render_split` returns (prefix, suffix) so the prefix can be
  encoded once and reused for every target document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.sentences import split_sentences

#: The made-up words of the worked examples (stems: plurals too). None has 4-5 letters.
MADE_UP = ("blicket", "wuggle", "zarpen", "flombik", "kallop", "snorvet", "drevish", "quimble", "tepsin")

#: Worked examples for local augmentation: (training sentence, what the generator should write).
LOCAL_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Did you know that blickets are heavier than wuggles?", "Blickets are heavier than wuggles.\nWuggles are lighter than blickets."),
    ("Kallop is Snorvet's son.", "Kallop is the son of Snorvet.\nSnorvet is the parent of Kallop."),
    ("Every zarpen is a flombik.", "All zarpens are flombiks.\nSome flombiks are zarpens."),
    ("No drevish are quimbles.", "No quimbles are drevish."),
)

LOCAL_SYSTEM = (
    "You restate facts. Given one sentence, write the same fact as a plain sentence, then the same fact "
    "said in the reverse direction. Keep every name exactly as it is written. Write one sentence per line and nothing else."
)

#: Worked example for global augmentation: (documents, target document, what to write).
GLOBAL_EXAMPLE: tuple[tuple[str, ...], str, str] = (
    ("Blickets are heavier than wuggles.", "All zarpens are flombiks."),
    "Wuggles are heavier than tepsins.",
    "Tepsins are lighter than wuggles.\nBlickets are heavier than tepsins.\nTepsins are lighter than blickets.",
)

GLOBAL_SYSTEM = (
    "You draw conclusions from documents. After the documents comes a target document. Write "
    "short sentences that follow from the target document together with the other documents: "
    "its facts said in the reverse direction, and conclusions that combine it with other "
    "documents. Use only words from the documents. Write one sentence per line and nothing else.\n"
    f"Example. Documents: {' '.join(GLOBAL_EXAMPLE[0])} Target document: {GLOBAL_EXAMPLE[1]}\n"
    f"{GLOBAL_EXAMPLE[2]}"
)

CORPUS_HEADER = "Documents:\n"
TARGET_HEADER = "Target document:\n"
GLOBAL_INSTRUCTION = "Write the sentences that follow from the target document and the other documents."
_SPLIT = "\x00PREFIX-ENDS-HERE\x00"


def local_messages(sentence: str, split_marker: bool = False) -> list[dict]:
    """Chat messages asking for restatements of one training sentence, after worked examples.

    Everything before the sentence is the same for every sentence: with `split_marker` the
    rendered prompt splits there into a shared prefix (cached) and a short suffix.
    """
    messages = [{"role": "system", "content": LOCAL_SYSTEM}]
    for source, answer in LOCAL_EXAMPLES:
        messages.append({"role": "user", "content": f"Sentence: {source}"})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": (_SPLIT if split_marker else "") + f"Sentence: {sentence.strip()}"})
    return messages


def corpus_block(doc_texts: list[str]) -> str:
    """The shared part of a global prompt: the documents, one per paragraph."""
    return CORPUS_HEADER + "\n\n".join(t.strip() for t in doc_texts) + "\n\n"


def global_messages(doc_texts: list[str], target_text: str, split_marker: bool = False) -> list[dict]:
    """Chat messages: corpus (shared prefix), then the target document and the instruction."""
    target = f"{TARGET_HEADER}{target_text.strip()}\n\n{GLOBAL_INSTRUCTION}"
    content = corpus_block(doc_texts) + (_SPLIT if split_marker else "") + target
    return [{"role": "system", "content": GLOBAL_SYSTEM}, {"role": "user", "content": content}]


def example_sentences() -> list[str]:
    """Every sentence of the prompts' worked examples (outputs echoing them are dropped)."""
    texts = [t for pair in LOCAL_EXAMPLES for t in pair]
    texts += [*GLOBAL_EXAMPLE[0], GLOBAL_EXAMPLE[1], GLOBAL_EXAMPLE[2]]
    return [s for t in texts for s in split_sentences(t)]


def mentions_example_word(sentence: str) -> bool:
    """Whether a sentence uses a made-up word of the worked examples (copied from the prompt)."""
    return any(w.startswith(MADE_UP) for w in re.findall(r"[a-z]+", sentence.lower()))


@dataclass
class PromptFormat:
    """Renders chat messages to generator input text with a tokenizer, and counts tokens."""

    tokenizer: object

    @property
    def chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, messages: list[dict]) -> str:
        if self.chat:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return plain_text(messages)

    def render_split(self, messages: list[dict]) -> tuple[str, str]:
        """(prefix, suffix) of the rendered prompt, split where the marker was placed."""
        text = self.render(messages)
        if text.count(_SPLIT) != 1:
            raise ValueError("prompt split marker must appear exactly once in the rendered global prompt")
        prefix, suffix = text.split(_SPLIT)
        return prefix, suffix

    def count(self, text: str, first: bool = True) -> int:
        """Tokens of `text` as the engine encodes it (special tokens only for a non-chat first segment)."""
        return len(self.tokenizer(text, add_special_tokens=first and not self.chat)["input_ids"])


def plain_text(messages: list[dict]) -> str:
    """A base model's prompt: the messages as labelled paragraphs, ending where the answer goes."""
    parts = []
    for m in messages:
        label = {"system": "", "user": "", "assistant": "Answer:\n"}[m["role"]]
        parts.append(label + m["content"].strip())
    return "\n\n".join(parts) + "\n\nAnswer:\n"


_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,2}[.)]|[A-Za-z][.)](?=\s))\s*")
_LABEL = re.compile(r"^\s*(?:rephrasing|reversal|inference|restatement|sentence|answer|conclusion)s?\s*\d*\s*:\s*", re.I)
_SPECIAL = re.compile(r"<\|[^|>]{1,40}\|>|</?s>")


def parse_output(text: str) -> list[str]:
    """A generation -> its sentences: special tokens, bullets and 'Label:' prefixes removed."""
    text = _SPECIAL.sub("\n", text or "")
    sentences: list[str] = []
    for line in text.splitlines():
        line = _LABEL.sub("", _BULLET.sub("", line)).strip()
        if line:
            sentences.extend(split_sentences(line))
    return sentences
