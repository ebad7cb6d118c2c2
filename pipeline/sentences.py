"""Sentence splitting: the one function that training and augmentation both use.

A multi-sentence document becomes one example per sentence, either `independent` (each sentence
alone) or `cumulative` (each sentence with the sentences before it as its context); `none` keeps
the document whole. An example is (context, target): loss goes on the target only.
"""

from __future__ import annotations

import re
from typing import Literal

SplitMode = Literal["independent", "cumulative", "none"]

# A sentence ends at . ! or ? (optionally followed by closing quotes or brackets) before
# whitespace; a lone initial like "J. Smith" or a number like "3.5" is not an end.
_BOUNDARY = re.compile(r"""(?<=[.!?])["')\]]*\s+(?=["'(\[]?[A-Za-z0-9])""")
_ABBREV = re.compile(r"(?:\b[A-Z]|\b(?:Mr|Mrs|Ms|Dr|St|vs|etc|e\.g|i\.e))\.$")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences, stripped, none empty. Newlines always end a sentence."""
    out: list[str] = []
    for line in text.splitlines():
        start = 0
        for m in _BOUNDARY.finditer(line):
            piece = line[start:m.start()].strip()
            if _ABBREV.search(piece):
                continue  # "Dr. Smith": not a boundary; keep accumulating
            if piece:
                out.append(line[start:m.end()].strip())
            start = m.end()
        tail = line[start:].strip()
        if tail:
            out.append(tail)
    return out


def split_doc(text: str, mode: SplitMode) -> list[tuple[str, str]]:
    """(context, target) training examples of one document under a splitting mode."""
    if mode == "none":
        return [("", text.strip())]
    sentences = split_sentences(text)
    if mode == "independent":
        return [("", s) for s in sentences]
    if mode == "cumulative":
        return [(" ".join(sentences[:i]), s) for i, s in enumerate(sentences)]
    raise ValueError(f"sentence split mode {mode!r}: expected independent, cumulative or none")
