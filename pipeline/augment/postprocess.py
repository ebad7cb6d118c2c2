"""Generations -> augmented Doc rows: one row per kept sentence.

Pure functions. Each generation is split into sentences, and a leading attribution clause
("Studies have confirmed that ...") is removed: it states nothing. A sentence is dropped when it
is degenerate (too short, too long, not a sentence, repetitive), echoes its source or the
prompts' worked examples (or uses their made-up words), uses a word found neither in its
world's training text nor in English (a misspelt or invented name), shares no content word
with its source (off-topic), repeats a training sentence, or repeats an earlier augmented
sentence of the same world and strategy. Every drop is counted by reason. Rows keep the world,
the strategy (origin) and the source document; doc_id is a hash of the normalized sentence, so
it does not depend on the order in which shards finished.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from pipeline.augment.prompts import mentions_example_word, parse_output
from pipeline.sentences import split_sentences

#: Reasons a generated sentence is dropped, in the order they are checked.
DROP_REASONS = ("too_short", "too_long", "not_a_sentence", "repetitive", "echo", "unknown_word", "off_topic",
                "in_training", "duplicate")

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_STOP = frozenset(
    "a an the is are was were be been of to in on and or not no all some every each than that this "
    "these those it its as by for with from what which who they them their there here do does did "
    "has have had more less most least also one two".split()
)


def normalize(sentence: str) -> str:
    """The form two sentences are compared in: lower case, single spaces, no end punctuation."""
    return " ".join(_WORD.findall(sentence.lower()))


def words(sentence: str) -> list[str]:
    return _WORD.findall(sentence.lower())


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOP and len(w) > 2}


def sentence_issue(sentence: str, min_words: int, max_words: int) -> str | None:
    """Why a sentence is degenerate, or None when it is usable."""
    ws = words(sentence)
    if len(ws) < min_words:
        return "too_short"
    if len(ws) > max_words:
        return "too_long"
    if not re.match(r"^[\"'(]?[A-Za-z]", sentence) or not re.search(r"[.!?][\"')\]]*$", sentence) or ":" in sentence:
        return "not_a_sentence"
    repeated_run = any(ws[i] == ws[i + 1] == ws[i + 2] for i in range(len(ws) - 2))
    if repeated_run or (len(ws) >= 6 and len(set(ws)) / len(ws) < 0.5):
        return "repetitive"
    return None


def doc_id(strategy: str, world: str, sentence: str) -> str:
    digest = hashlib.sha1(f"{world}\x00{normalize(sentence)}".encode()).hexdigest()[:16]
    return f"aug-{strategy}-{world}-{digest}"


@dataclass
class TrainingIndex:
    """What post-processing compares against, per world: training sentences and vocabulary."""

    norms: dict[str, set[str]]
    vocab: dict[str, set[str]]


def training_index(train_docs: list[dict]) -> TrainingIndex:
    norms: dict[str, set[str]] = defaultdict(set)
    vocab: dict[str, set[str]] = defaultdict(set)
    for doc in train_docs:
        for sentence in split_sentences(doc["text"]):
            norms[doc["world"]].update({normalize(sentence), normalize(strip_attribution(sentence))})
        vocab[doc["world"]].update(words(doc["text"]))
    return TrainingIndex(dict(norms), dict(vocab))


@functools.lru_cache(maxsize=1)
def english() -> frozenset[str]:
    from english_words import get_english_words_set

    return frozenset(get_english_words_set(["web2", "gcide"], lower=True, alpha=True))


def _forms(word: str) -> set[str]:
    """A word and its likely stems (plural, possessive, verb endings)."""
    w = word.strip("'-").removesuffix("'s")
    out = {w}
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e")):
        if w.endswith(suffix) and len(w) > len(suffix) + 2:
            out.add(w[: -len(suffix)] + repl)
    return out


def unknown_words(sentence: str, vocab: set[str]) -> list[str]:
    """Words of the sentence in neither the world's training vocabulary nor English."""
    known = english()
    return [w for w in words(sentence) if not (_forms(w) & vocab or _forms(w) & known)]


_ATTRIBUTION = re.compile(r"^(?P<lead>(?:[A-Za-z']+,?\s+){0,6}?that)\s+(?P<rest>[A-Za-z].*)$", re.I)
_NOT_ATTRIBUTION = frozenset("is are was were all some no every each".split())


def strip_attribution(sentence: str) -> str:
    """'Studies have confirmed that femp are big.' -> 'Femp are big.' (the lead states nothing)."""
    m = _ATTRIBUTION.match(sentence)
    if not m or set(words(m["lead"])) & _NOT_ATTRIBUTION:
        return sentence
    rest = m["rest"]
    if rest.endswith("?"):
        rest = rest[:-1] + "."
    return rest[0].upper() + rest[1:]


def postprocess(
    generations: list[dict],
    index: TrainingIndex,
    examples: list[str],
    min_words: int,
    max_words: int,
) -> tuple[list[dict], dict]:
    """Generations (strategy, world, source_doc_id, source_text, request_id, text, status) -> Doc rows, counts.

    Counts are keyed "<strategy>/<world>": generations, empty (nothing generated), errors,
    sentences, kept and one entry per drop reason.
    """
    example_norms = {normalize(s) for s in examples}
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    counts: dict[str, Counter] = defaultdict(Counter)
    rows: list[dict] = []
    for gen in sorted(generations, key=lambda g: g["request_id"]):
        strategy, world = gen["strategy"], gen["world"]
        tally = counts[f"{strategy}/{world}"]
        tally["generations"] += 1
        if gen["status"] != "ok":
            tally["errors" if gen["status"].startswith("error") else "empty"] += 1
            continue
        sentences = parse_output(gen["text"])
        if not sentences:
            tally["empty"] += 1
            continue
        source_norms = {normalize(f(s)) for s in split_sentences(gen["source_text"]) for f in (str, strip_attribution)}
        topic = content_words(gen["source_text"])
        for sentence in sentences:
            tally["sentences"] += 1
            sentence = strip_attribution(sentence)
            norm = normalize(sentence)
            reason = sentence_issue(sentence, min_words, max_words)
            if reason is None and (norm in source_norms or norm in example_norms or mentions_example_word(sentence)):
                reason = "echo"
            if reason is None and unknown_words(sentence, index.vocab.get(world, set())):
                reason = "unknown_word"
            if reason is None and not (content_words(sentence) & topic):
                reason = "off_topic"
            if reason is None and norm in index.norms.get(world, ()):
                reason = "in_training"
            if reason is None and norm in seen[(strategy, world)]:
                reason = "duplicate"
            if reason:
                tally[f"dropped_{reason}"] += 1
                continue
            seen[(strategy, world)].add(norm)
            tally["kept"] += 1
            rows.append({
                "doc_id": doc_id(strategy, world, sentence), "world": world, "text": sentence,
                "origin": f"augment:{strategy}", "source_doc_id": gen["source_doc_id"], "facts": [],
                "completion_start": 0,
            })
    return rows, {key: dict(c) for key, c in sorted(counts.items())}


def dedupe_oracle(rows: list[dict], index: TrainingIndex) -> tuple[list[dict], dict]:
    """Oracle rows are true by construction: only drop repeats of training or earlier sentences."""
    seen: dict[str, set[str]] = defaultdict(set)
    counts: dict[str, Counter] = defaultdict(Counter)
    out = []
    for row in rows:
        world, norm = row["world"], normalize(row["text"])
        tally = counts[f"oracle/{world}"]
        tally["sentences"] += 1
        if norm in index.norms.get(world, ()):
            tally["dropped_in_training"] += 1
        elif norm in seen[world]:
            tally["dropped_duplicate"] += 1
        else:
            seen[world].add(norm)
            tally["kept"] += 1
            out.append(row)
    return out, {key: dict(c) for key, c in sorted(counts.items())}
