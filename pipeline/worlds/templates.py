"""Sentence templates as regular expressions, so a world can both write and read its sentences.

A world writes sentences from templates such as "{s} are {rel} than {o}" and parses sentences
back with the same templates: `compile_template` turns one into a case-insensitive full-match
regex with a named group per slot. `normalise` strips a sentence's outer whitespace and end
punctuation; `strip_lead_in` removes a known discourse prefix ("Did you know that ...").
`parse_text` applies a one-sentence parser to every sentence of a text.
"""

from __future__ import annotations

import re
from typing import Callable

from pipeline.sentences import split_sentences

Triple = tuple[str, str, str]
#: One word of letters (nonsense words, names).
WORD = r"[A-Za-z]+"


def compile_template(template: str, **slots: str) -> re.Pattern:
    """'{s} are {rel} than {o}' -> regex with groups s, rel, o; literal text matches loosely.

    Spaces match any run of whitespace; `{a}` (or `{A}`) matches the article 'a' or 'an'. A
    slot named twice must match the same text twice.
    """
    out, seen = [], set()
    for piece in re.split(r"(\{\w+\})", template):
        if not piece:
            continue
        if piece.startswith("{") and piece.endswith("}"):
            name = piece[1:-1]
            if name in ("a", "A"):
                out.append(r"an?")
            elif name in seen:
                out.append(f"(?P={name})")
            else:
                seen.add(name)
                out.append(f"(?P<{name}>{slots.get(name, WORD)})")
        else:
            out.append(r"\s+".join(re.escape(w) for w in piece.split(" ")))
    return re.compile("".join(out), re.IGNORECASE)


def normalise(sentence: str) -> str:
    """Collapse whitespace; strip surrounding quotes/space and end punctuation (. ! ? ;)."""
    text = " ".join(sentence.split())
    return re.sub(r"[\s.!?;:]+$", "", text).strip()


def strip_lead_in(sentence: str, lead_ins: re.Pattern | None) -> str:
    if lead_ins is None:
        return sentence
    m = lead_ins.match(sentence)
    return sentence[m.end():] if m else sentence


def lead_in_pattern(prefixes: list[str] | tuple[str, ...]) -> re.Pattern:
    """A regex matching any of the given lead-in prefixes at the start of a sentence."""
    alternatives = "|".join(r"\s+".join(re.escape(w) for w in p.split()) for p in
                            sorted(prefixes, key=len, reverse=True))
    return re.compile(rf"(?:{alternatives})\s*", re.IGNORECASE)


def match_first(patterns, text: str) -> tuple[object, re.Match] | None:
    """The first (key, match) of (key, pattern) pairs whose pattern fully matches the text."""
    for key, pattern in patterns:
        m = pattern.fullmatch(text)
        if m:
            return key, m
    return None


def is_question(sentence: str) -> bool:
    s = sentence.strip()
    return s.endswith("?") or s.lower().startswith("q:")


def parse_text(text: str, parse_sentence: Callable[[str], list[Triple] | None]) -> list[Triple] | None:
    """Triples of every sentence of a text; None if a sentence that is not a question is not
    recognised, or if no sentence asserts anything. Questions assert nothing and are skipped."""
    triples: list[Triple] = []
    asserted = False
    for sentence in split_sentences(text):
        got = parse_sentence(sentence)
        if got is None:
            if is_question(sentence):
                continue
            return None
        asserted = True
        triples.extend(t for t in got if t not in triples)
    return triples if asserted else None


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


class PerFacts:
    """Caches a lookup table a parser builds from a fact list (parse is called once per sentence
    with the same list). The cache is keyed on the list object and its length, so a new or
    grown list is indexed afresh; a list edited in place without changing length is not."""

    def __init__(self, build):
        self._build = build
        self._recent: list[tuple[list, int, object]] = []

    def __call__(self, facts: list[dict]):
        for seen, n, table in self._recent:
            if seen is facts and n == len(facts):
                return table
        table = self._build(facts)
        self._recent = [(facts, len(facts), table)] + self._recent[:3]
        return table
