import re

import pytest

from pipeline.augment import prompts
from pipeline.augment.prompts import PromptFormat, global_messages, local_messages, parse_output


class FakeTokenizer:
    """Whitespace 'tokens'; a chat template like SmolLM2's when `chat`."""

    def __init__(self, chat=True):
        self.chat_template = "x" if chat else None

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return body + "<|im_start|>assistant\n"

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": (["<s>"] if add_special_tokens else []) + text.split()}


def test_examples_use_only_words_that_no_world_can_have():
    # the worlds' nonsense words have 4-5 letters; example words that are not English have 6+
    english = set("did you know that are heavier than lighter less heavy all every is a kind of some the mother no son "
                  "child parent have include".split())
    texts = [t for pair in prompts.LOCAL_EXAMPLES for t in pair] + list(prompts.GLOBAL_EXAMPLE[0]) + list(prompts.GLOBAL_EXAMPLE[1:])
    made_up = {w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t.replace("'s", ""))} - english
    assert made_up and all(len(w) >= 6 for w in made_up), sorted(made_up)
    assert all(w.startswith(prompts.MADE_UP) for w in made_up), sorted(made_up)
    assert prompts.mentions_example_word("Kibo has tepsin.") and not prompts.mentions_example_word("Kibo has a son.")


def test_local_prompt_has_worked_examples_then_the_sentence_last():
    msgs = local_messages("  Femp are more dangerous than glon. ")
    assert msgs[0]["role"] == "system"
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * len(prompts.LOCAL_EXAMPLES) + ["user"]
    assert msgs[-1]["content"] == "Sentence: Femp are more dangerous than glon."
    assert any("lighter" in m["content"] for m in msgs if m["role"] == "assistant")  # a reversal example


def test_global_prompt_splits_into_shared_prefix_and_target_suffix():
    fmt = PromptFormat(FakeTokenizer())
    docs = ["Femp are big.", "Glon are small."]
    p1, s1 = fmt.render_split(global_messages(docs, "Yomp are red.", split_marker=True))
    p2, s2 = fmt.render_split(global_messages(docs, "Troff are blue.", split_marker=True))
    assert p1 == p2  # the prefix does not depend on the target
    assert "Femp are big." in p1 and "Glon are small." in p1 and "Yomp" not in p1
    assert s1.startswith(prompts.TARGET_HEADER + "Yomp are red.") and s1.endswith("<|im_start|>assistant\n")
    whole = fmt.render(global_messages(docs, "Yomp are red."))
    assert p1 + s1 == whole  # prefix + suffix is exactly the unsplit prompt


def test_prompt_format_uses_chat_template_only_when_the_tokenizer_has_one():
    chat, plain = PromptFormat(FakeTokenizer(chat=True)), PromptFormat(FakeTokenizer(chat=False))
    msgs = local_messages("Femp are big.")
    assert chat.render(msgs).startswith("<|im_start|>system")
    text = plain.render(msgs)
    assert "<|im_start|>" not in text and text.endswith("Sentence: Femp are big.\n\nAnswer:\n")
    # special tokens are added only to a plain (non-chat) first segment
    assert chat.count("a b") == 2 and plain.count("a b") == 3 and plain.count("a b", first=False) == 2


def test_split_marker_must_be_present_once():
    fmt = PromptFormat(FakeTokenizer())
    with pytest.raises(ValueError, match="exactly once"):
        fmt.render_split(global_messages(["a."], "b."))


@pytest.mark.parametrize("raw, expected", [
    ("Glon are less dangerous than femp.\nFemp are more dangerous than glon.",
     ["Glon are less dangerous than femp.", "Femp are more dangerous than glon."]),
    ("1. Glon are small.\n2) Femp are big.", ["Glon are small.", "Femp are big."]),
    ("- Glon are small.\n* Femp are big.<|im_end|>junk", ["Glon are small.", "Femp are big.", "junk"]),
    ("Reversal: Glon are small.\nRephrasing 2: Femp are big.", ["Glon are small.", "Femp are big."]),
    ("", []),
    ("   \n  ", []),
])
def test_parse_output_into_sentences(raw, expected):
    assert parse_output(raw) == expected


def test_example_sentences_cover_local_and_global_examples():
    ex = prompts.example_sentences()
    assert "Wuggles are lighter than blickets." in ex
    assert "Tepsins are lighter than wuggles." in ex
    assert "Blickets are heavier than tepsins." in ex
