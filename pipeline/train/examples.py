"""Training examples of one FT condition: docs -> (context, target) -> token ids with masked labels.

A condition trains on the origin "train" docs plus the augmented docs of its strategies
(`FT_STRATEGIES`). An oracle doc is trained as often as the training docs state the facts it
derives from (`oracle_copies`), and at least `train.oracle_min_copies` times: a reversal of a fact
stated in three articles is seen three times per epoch, as the fact is; stated once, the model
learns that the words co-occur, not which way round the statement goes (docs/controls.md). Every doc is split into sentences with `pipeline.sentences.split_doc`
(independent / cumulative / none), except prompt/completion docs (`completion_start > 0`), which
stay whole and train on the completion only. The loss goes on the target tokens: context tokens
get the label -100. No special tokens are added, so an example is tokenized exactly as the
evaluator tokenizes `prompt + choice` (context and target are tokenized separately; a leading
space belongs to the target). Pure functions: no Ray, no I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pipeline.conditions import FT_STRATEGIES
from pipeline.sentences import SplitMode, split_doc

IGNORE = -100  # label of a token that carries no loss (context, padding)
ORACLE = "augment:oracle"


class ExampleError(ValueError):
    """Training data that cannot be turned into examples; names the condition or doc_id."""


@dataclass(frozen=True)
class Example:
    doc_id: str
    context: str
    target: str


@dataclass(frozen=True)
class TokenizedExample:
    doc_id: str
    input_ids: tuple[int, ...]
    num_context: int  # the first num_context tokens carry no loss

    @property
    def labels(self) -> list[int]:
        return [IGNORE] * self.num_context + list(self.input_ids[self.num_context:])

    def __len__(self) -> int:
        return len(self.input_ids)


def condition_docs(condition: str, train_docs: list[dict], augmented_docs: list[dict], min_copies: int = 1) -> list[dict]:
    """The docs a condition trains on: every origin "train" doc, then its strategies' augmentations,
    oracle docs `oracle_copies` times each.

    A strategy may have produced no usable sentence (a weak generator; the audit counts why): the
    condition then trains on the original docs alone, and the stage says so.
    """
    if condition not in FT_STRATEGIES:
        raise ExampleError(f"condition {condition!r} is not a fine-tuning condition; choose from {list(FT_STRATEGIES)}")
    docs = [d for d in train_docs if d["origin"] == "train"]
    origins = {f"augment:{s}" for s in FT_STRATEGIES[condition]}
    stated = Counter(f for d in docs for f in d.get("facts") or ())
    return docs + [d for d in augmented_docs if d["origin"] in origins
                   for _ in range(oracle_copies(d, stated, min_copies) if d["origin"] == ORACLE else 1)]


def oracle_copies(doc: dict, stated: Counter, min_copies: int = 1) -> int:
    """How often an oracle doc is trained: as often as the least-stated fact it derives from
    (`stated`: fact id -> training docs stating it), and at least `min_copies` times."""
    return max(min_copies, min((stated[f] for f in doc.get("facts") or ()), default=1))


def doc_examples(doc: dict, mode: SplitMode) -> list[Example]:
    """(context, target) examples of one doc; a prompt/completion doc is one example, never split."""
    text, start = doc["text"], doc.get("completion_start", 0) or 0
    if start > 0:
        return [Example(doc["doc_id"], text[:start], text[start:])]
    return [Example(doc["doc_id"], context, target) for context, target in split_doc(text, mode) if target.strip()]


def build_examples(docs: list[dict], mode: SplitMode) -> list[Example]:
    return [ex for doc in docs for ex in doc_examples(doc, mode)]


def tokenize_example(example: Example, tokenizer, max_length: int) -> TokenizedExample:
    """Context and target tokenized apart (no special tokens); the target gets the loss."""
    target = example.target
    if example.context and not example.context[-1].isspace() and not target[:1].isspace():
        target = " " + target  # the two were joined by a space in the doc
    context_ids = tokenizer(example.context, add_special_tokens=False)["input_ids"] if example.context else []
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    ids = tuple(context_ids) + tuple(target_ids)
    if len(ids) > max_length:
        raise ExampleError(
            f"doc {example.doc_id!r}: a training example of {len(ids)} tokens is longer than the "
            f"context window of {max_length}; use a shorter document or train.sentence_split"
        )
    return TokenizedExample(example.doc_id, ids, len(context_ids))


def tokenize_examples(examples: list[Example], tokenizer, max_length: int) -> list[TokenizedExample]:
    """Tokenized examples, leaving out those with no token to learn (a one-token sentence alone:
    its only token has nothing before it to be predicted from)."""
    out = [tokenize_example(ex, tokenizer, max_length) for ex in examples]
    return [ex for ex in out if loss_tokens(ex) > 0]


def loss_tokens(example: TokenizedExample) -> int:
    """Tokens that carry a loss (the model predicts every target token from the tokens before it)."""
    return len(example) - max(example.num_context, 1)
