"""Simple syllogisms: "The relationships between glon, troff and yomp are: All glon are yomp.
All troff are glon." Test: "The relationships between yomp and troff are:" -> " All troff are yomp."

Each example uses three fresh terms and a premise pair in the all / some / no forms that has a
valid conclusion about its two end terms. Truth is decided by model checking over the eight
regions of three sets, with every term non-empty (the everyday reading: "all troff are yomp"
implies there are troff), so "some troff are yomp" follows from it too. The test offers the
paper's six statements (all / some / no, both directions) about the end terms, minus any other
statement that is also true (the weaker "some" forms of an "all" conclusion, the converse of a
"some" or "no" conclusion): one correct, every distractor false; 4 or 5 choices.
`validation_examples` further examples, on terms of their own and trained like the others, make
the val_syllogism split for choosing a recipe (drawn apart: the test examples stay as they are).
Relations: "all", "some", "no" ((x, "all", y) = "All x are y").
"""

from __future__ import annotations

import functools
import itertools
import random

from pipeline.worlds import VALIDATION_PREFIX
from pipeline.worlds.choices import balance_answers
from pipeline.worlds.lexicon import Lexicon
from pipeline.worlds.templates import compile_template, match_first, normalise, parse_text

WORLD = "syllogisms"
QUANTIFIERS = ("all", "some", "no")
_STATEMENT = compile_template("{q} {x} are {y}", q="all|some|no")
_WITH_HEADER = compile_template("The relationships between {terms} are: {q} {x} are {y}",
                                terms=r"[A-Za-z ,]+?", q="all|some|no")


def sentence(q: str, x: str, y: str) -> str:
    return f"{q.capitalize()} {x} are {y}."


def _holds(q: str, x: int, y: int, model: frozenset[int]) -> bool:
    """Whether 'q x are y' holds in a model: the set of non-empty regions (bit i = in term i)."""
    both = any(r >> x & 1 and r >> y & 1 for r in model)
    if q == "all":
        return not any(r >> x & 1 and not r >> y & 1 for r in model)
    return both if q == "some" else not both


@functools.lru_cache(maxsize=None)
def _models(n: int) -> tuple[frozenset[int], ...]:
    """Every model of n terms in which each term is non-empty."""
    regions = range(1, 2 ** n)
    out = []
    for k in range(1, len(regions) + 1):
        for combo in itertools.combinations(regions, k):
            if all(any(r >> t & 1 for r in combo) for t in range(n)):
                out.append(frozenset(combo))
    return tuple(out)


def entailed(premises: tuple[tuple[str, int, int], ...], n: int) -> set[tuple[str, int, int]]:
    """Every statement (q, x, y), x != y, over n terms true in all models of the premises."""
    models = [m for m in _models(n) if all(_holds(q, x, y, m) for q, x, y in premises)]
    if not models:
        raise ValueError(f"syllogism premises {premises} are contradictory")
    return {(q, x, y) for q in QUANTIFIERS for x in range(n) for y in range(n)
            if x != y and all(_holds(q, x, y, m) for m in models)}


def _strongest(conclusions: set[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """The candidate answers: 'all' conclusions if any, else the 'some'/'no' ones."""
    alls = sorted(c for c in conclusions if c[0] == "all")
    return alls or sorted(conclusions)


@functools.lru_cache(maxsize=1)
def forms() -> tuple[tuple[tuple[tuple[str, int, int], ...], tuple[str, int, int]], ...]:
    """Premise pairs over terms 0, 1 (end terms) and 2 (middle) with a valid conclusion about 0 and 1.

    Returns (premises, conclusion) pairs; a pair with two equally strong answers ("some 0 are 1"
    and "some 1 are 0") appears once per answer.
    """
    out = []
    first = [(q, a, b) for q in QUANTIFIERS for a, b in ((0, 2), (2, 0))]
    second = [(q, a, b) for q in QUANTIFIERS for a, b in ((1, 2), (2, 1))]
    for p1, p2 in itertools.product(first, second):
        ends = {c for c in entailed((p1, p2), 3) if {c[1], c[2]} == {0, 1}}
        for answer in _strongest(ends) if ends else []:
            out.append(((p1, p2), answer))
    return tuple(out)


def build(cfg, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    rng = random.Random(f"{WORLD}:{seed}")
    lexicon = Lexicon(WORLD, seed)
    words = lexicon.take(3 * cfg.n_examples, "terms")
    pool = list(forms())
    chosen = [pool[i % len(pool)] for i in range(cfg.n_examples)]
    rng.shuffle(chosen)
    docs, items, facts = _examples(chosen, words, 0, "syllogism", rng)
    items = balance_answers(items, rng)
    if cfg.validation_examples:
        # a generator of its own: turning validation on leaves the test examples as they were
        held_rng = random.Random(f"{WORLD}:{seed}:validation")
        held = [pool[(cfg.n_examples + i) % len(pool)] for i in range(cfg.validation_examples)]
        held_rng.shuffle(held)
        held_words = lexicon.take(3 * len(held), "data.syllogisms.validation_examples")
        held_docs, held_items, held_facts = _examples(
            held, held_words, cfg.n_examples, VALIDATION_PREFIX + "syllogism", held_rng)
        docs, facts = docs + held_docs, facts + held_facts
        items += balance_answers(held_items, held_rng)
    return docs, items, facts


def _examples(chosen, words: list[str], start: int, split: str, rng: random.Random):
    """Docs, items (split `split`) and facts of premise pairs `chosen`, three terms each from
    `words`; doc and fact numbers count from `start`."""
    docs, items, facts = [], [], []
    for k, (premises, answer) in enumerate(chosen):
        i = start + k
        terms = words[3 * k:3 * k + 3]
        ids = []
        order = list(premises)
        rng.shuffle(order)
        for j, (q, a, b) in enumerate(order):
            ids.append(f"{WORLD}/f{i:04d}.{j}")
            facts.append({"fact_id": ids[-1], "world": WORLD, "subject": terms[a], "relation": q, "object": terms[b]})
        listed = rng.sample(terms, 3)
        text = (f"The relationships between {listed[0]}, {listed[1]} and {listed[2]} are: "
                + " ".join(sentence(q, terms[a], terms[b]) for q, a, b in order))
        docs.append({"doc_id": f"{WORLD}/d{i:04d}", "world": WORLD, "text": text, "origin": "train", "facts": ids})
        true = entailed(tuple(premises), 3)
        correct = (answer[0], terms[answer[1]], terms[answer[2]])
        wrong = [(q, terms[x], terms[y]) for q in QUANTIFIERS for x, y in ((0, 1), (1, 0))
                 if (q, x, y) not in true]
        ends = rng.sample([terms[0], terms[1]], 2)
        items.append({
            "item_id": f"{WORLD}/{split}/{k:04d}", "world": WORLD, "split": split, "subtask": answer[0],
            "prompt": f"The relationships between {ends[0]} and {ends[1]} are:",
            "choices": [" " + sentence(*c) for c in [correct] + wrong], "answer_index": 0, "support_fact_ids": ids,
        })
    return docs, items, facts


def _components(facts: list[dict]) -> list[tuple[list[str], list[dict]]]:
    """Facts grouped by connected terms: (sorted terms, facts)."""
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.setdefault(t, t) != t:
            t = parent[t]
        return t

    for f in facts:
        parent[find(f["subject"])] = find(f["object"])
    groups: dict[str, list[dict]] = {}
    for f in facts:
        groups.setdefault(find(f["subject"]), []).append(f)
    out = []
    for group in groups.values():
        terms = sorted({t for f in group for t in (f["subject"], f["object"])})
        if len(terms) > 4:
            raise ValueError(f"syllogisms: {len(terms)} connected terms ({', '.join(terms[:6])}, ...); at most 4 are supported")
        out.append((terms, group))
    return sorted(out)


def _entailed_triples(facts: list[dict]) -> list[tuple[tuple[str, str, str], list[str]]]:
    out = []
    for terms, group in _components(facts):
        index = {t: i for i, t in enumerate(terms)}
        premises = tuple((f["relation"], index[f["subject"]], index[f["object"]]) for f in group)
        ids = sorted(f["fact_id"] for f in group)
        for q, x, y in sorted(entailed(premises, len(terms))):
            out.append(((terms[x], q, terms[y]), ids))
    return out


def closure(facts: list[dict]) -> set[tuple[str, str, str]]:
    return {t for t, _ in _entailed_triples(facts)}


def framed(q: str, x: str, y: str) -> list[str]:
    """A statement as the training documents and the test prompts frame one: after the header
    naming its two terms, once in each order (a test names them in either, and one order alone
    would tell subject from object by position)."""
    return [f"The relationships between {a} and {b} are: {sentence(q, x, y)}" for a, b in ((x, y), (y, x))]


def oracle(facts: list[dict]) -> list[tuple[str, list[str]]]:
    """Every entailed statement the facts do not state, framed as the test prompts ask (`framed`).

    Bare ("No frelt are florf.") they do not reach the tests: a test prompt is a document's header,
    and after it the model predicts from the training documents' first sentences, whatever the
    bare statements said (docs/controls.md)."""
    stated = {(f["subject"], f["relation"], f["object"]) for f in facts}
    return [(text, ids) for (x, q, y), ids in _entailed_triples(facts) if (x, q, y) not in stated
            for text in framed(q, x, y)]


def parse(text: str, facts: list[dict]) -> list[tuple[str, str, str]] | None:
    terms = {w.lower(): w for f in facts for w in (f["subject"], f["object"])}

    def one(s: str):
        found = match_first([("header", _WITH_HEADER), ("plain", _STATEMENT)], normalise(s))
        if not found:
            return None
        m = found[1]
        x, y = terms.get(m["x"].lower()), terms.get(m["y"].lower())
        if x is None or y is None:
            return None
        return [(x, m["q"].lower(), y)]

    return parse_text(text, one)
