"""Nonsense words: seeded, pronounceable, 4-5 letters, never English, never handed out twice.

Words are built from English-like syllable parts (onset + vowel + coda, e.g. "femp", "glon",
"troff"; or consonant-vowel-consonant-vowel, e.g. "kemo"). A candidate is dropped when it, its
plural (+s, +es) or its singular (-s) is in the English word lists `web2` and `gcide` of the
`english-words` package (263k words together), or when it contains a rude fragment.

The candidate pool is split once, with a fixed seed, into disjoint shares, one per world that
makes words, so words are unique across the worlds of a run whatever each world's seed is.
Inside a share the run seed shuffles the order; a `Lexicon` hands words out without
replacement, so no word serves two roles (a category and a property, say).
"""

from __future__ import annotations

import functools
import random
import re

from pipeline.worlds import WorldError

ONSETS = ("b", "bl", "br", "ch", "d", "dr", "f", "fl", "fr", "g", "gl", "gr", "j", "k", "kl",
          "kr", "l", "m", "n", "p", "pl", "pr", "r", "s", "sk", "sl", "sm", "sn", "sp", "st",
          "t", "tr", "v", "w", "y", "z")
VOWELS = ("a", "e", "i", "o", "u", "oo", "ee", "ai", "ou")
CODAS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "t", "x", "ff", "ll", "mp", "nd",
         "nk", "nt", "rb", "rd", "rf", "rk", "rm", "rn", "rp", "rt", "sk", "sp", "st", "ft",
         "lk", "lm", "lp", "lt", "ss", "zz")
SIMPLE_CONSONANTS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
SIMPLE_VOWELS = ("a", "e", "i", "o", "u")
RUDE = ("fuk", "fuc", "fag", "nig", "cum", "dik", "kok", "cok", "shit", "tit", "poo", "pee",
        "sex", "ass", "slut", "rape", "porn", "kkk", "nazi")
#: The English word lists a candidate is checked against.
WORD_LISTS = ("web2", "gcide")
#: Worlds that draw words, each from its own share of the pool (order fixes the shares).
SHARES = ("reversals", "syllogisms", "semantic", "families")


class LexiconError(WorldError):
    """More words asked for than a world's share of the pool holds."""


@functools.lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    from english_words import get_english_words_set

    return frozenset(get_english_words_set(list(WORD_LISTS), lower=True, alpha=True))


def is_english(word: str) -> bool:
    """True if the word, its plural or its singular is an English word."""
    english = english_words()
    forms = {word, word + "s", word + "es"}
    if word.endswith("s"):
        forms.add(word[:-1])
    return any(f in english for f in forms)


def _candidates() -> list[str]:
    words = {o + v + c for o in ONSETS for v in VOWELS for c in CODAS}
    words |= {a + b + c + d for a in SIMPLE_CONSONANTS for b in SIMPLE_VOWELS
              for c in SIMPLE_CONSONANTS for d in SIMPLE_VOWELS}
    return sorted(w for w in words if 4 <= len(w) <= 5)


def _pronounceable(word: str) -> bool:
    """No letter three times in a row, and no doubled vowel before a doubled consonant."""
    if any(word[i] == word[i + 1] == word[i + 2] for i in range(len(word) - 2)):
        return False
    return not re.search(r"(oo|ee|ai|ou)(ff|ll|ss|zz)$", word)


@functools.lru_cache(maxsize=1)
def shares() -> dict[str, tuple[str, ...]]:
    """The non-English candidates dealt, in a fixed shuffled order, into one share per world."""
    pool = [w for w in _candidates()
            if _pronounceable(w) and not any(r in w for r in RUDE) and not is_english(w)]
    random.Random("lexicon-shares").shuffle(pool)
    return {name: tuple(sorted(pool[i::len(SHARES)])) for i, name in enumerate(SHARES)}


class Lexicon:
    """Hands out a world's nonsense words in a seeded order, each word at most once."""

    def __init__(self, world: str, seed: int):
        if world not in SHARES:
            raise ValueError(f"lexicon: no word share for world {world!r}; shares: {list(SHARES)}")
        self.world = world
        self._words = list(shares()[world])
        random.Random(f"lexicon:{world}:{seed}").shuffle(self._words)
        self._next = 0

    @property
    def capacity(self) -> int:
        return len(self._words)

    @property
    def remaining(self) -> int:
        return len(self._words) - self._next

    def take(self, n: int, role: str) -> list[str]:
        """`n` fresh words for one role (e.g. 'category'); an error if the share runs out."""
        if n > self.remaining:
            raise LexiconError(
                f"needs {n} more nonsense words for {role} but only {self.remaining} of "
                f"{self.capacity} are left in the {self.world} world's share of the lexicon"
            )
        out = self._words[self._next:self._next + n]
        self._next += n
        return out
