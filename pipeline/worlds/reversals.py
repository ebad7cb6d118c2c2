"""Simple reversals: "femp are more dangerous than glon", each fact in K lead-in articles.

Every fact compares two fresh nonsense nouns along one of 28 dimensions; which member of the
comparative pair the fact uses is random, so "less"/"more" carries no answer bias. Tests:
- reversal: "glon are" -> " less dangerous than femp" (the reversal) vs " more dangerous than
  femp" (its contradiction);
- rephrase (same direction, a template never used in training): "Compared to glon, femp are"
  -> " more dangerous" vs " less dangerous";
- val_reversal, val_rephrase: the same tests on `validation_facts` further facts, trained like
  the others, for choosing a training recipe without looking at the test items.
Relations are the comparative with underscores ("more_dangerous"); the reversal of (a, r, b)
is (b, inverse(r), a), and facts that chain along one dimension are transitive.
"""

from __future__ import annotations

import random
from collections import defaultdict

from pipeline.worlds import VALIDATION_PREFIX
from pipeline.worlds.choices import balance_answers
from pipeline.worlds.lexicon import Lexicon
from pipeline.worlds.templates import (compile_template, lead_in_pattern, match_first, normalise,
                                       parse_text, strip_lead_in)

WORLD = "reversals"
#: (comparative, its opposite): each word form occurs in exactly one pair.
COMPARATIVES = (
    ("brighter", "dimmer"), ("heavier", "lighter"), ("larger", "smaller"), ("faster", "slower"),
    ("older", "younger"), ("stronger", "weaker"), ("taller", "shorter"), ("warmer", "colder"),
    ("louder", "quieter"), ("harder", "softer"), ("richer", "poorer"), ("wider", "narrower"),
    ("deeper", "shallower"), ("thicker", "thinner"), ("more dangerous", "less dangerous"),
    ("more expensive", "less expensive"), ("more intelligent", "less intelligent"),
    ("more popular", "less popular"), ("more valuable", "less valuable"),
    ("more famous", "less famous"), ("more fragile", "less fragile"),
    ("more colorful", "less colorful"), ("more aggressive", "less aggressive"),
    ("more common", "less common"), ("more patient", "less patient"),
    ("more flexible", "less flexible"), ("more curious", "less curious"),
    ("more fertile", "less fertile"),
)
RELATION = {phrase: phrase.replace(" ", "_") for pair in COMPARATIVES for phrase in pair}
PHRASE = {rel: phrase for phrase, rel in RELATION.items()}
INVERSE = {RELATION[a]: RELATION[b] for a, b in COMPARATIVES} | {RELATION[b]: RELATION[a] for a, b in COMPARATIVES}
#: Dimension of a relation, and whether the relation points "up" (the first member of its pair).
DIMENSION = {RELATION[p]: (i, p == pair[0]) for i, pair in enumerate(COMPARATIVES) for p in pair}
LEAD_INS = (
    "Did you know that {}?", "It is well known that {}.", "Scientists have found that {}.",
    "According to recent reports, {}.", "Here is a fun fact: {}.", "Many people do not realize that {}.",
    "Studies confirm that {}.", "As every expert knows, {}.", "It turns out that {}.",
    "Interestingly, {}.", "Researchers agree that {}.", "Believe it or not, {}.",
)
_LEAD = lead_in_pattern([t.split("{}")[0] for t in LEAD_INS])
_REL = "|".join(sorted((p.replace(" ", r"\s+") for p in RELATION), key=len, reverse=True))
STATEMENT = "{s} are {rel} than {o}"
REPHRASE = "Compared to {o}, {s} are {rel}"
_PATTERNS = [(t, compile_template(t, rel=_REL)) for t in (STATEMENT, REPHRASE)]


def build(cfg, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    rng = random.Random(f"{WORLD}:{seed}")
    lexicon = Lexicon(WORLD, seed)
    facts = _facts(cfg.n_facts, lexicon, rng, start=0)
    held = _facts(cfg.validation_facts, lexicon, rng, start=cfg.n_facts)
    docs = []
    for f in facts + held:
        statement = STATEMENT.format(s=f["subject"], rel=PHRASE[f["relation"]], o=f["object"])
        for lead in _lead_ins(cfg.articles_per_fact, rng):
            docs.append({"world": WORLD, "text": lead.format(statement), "origin": "train", "facts": [f["fact_id"]]})
    rng.shuffle(docs)
    docs = [{"doc_id": f"{WORLD}/d{i:05d}", **d} for i, d in enumerate(docs)]
    items = _items(facts, "") + _items(held, VALIDATION_PREFIX)
    return docs, balance_answers(items, rng), facts + held


def _facts(n: int, lexicon: Lexicon, rng: random.Random, start: int) -> list[dict]:
    """n facts over fresh nouns, the dimensions spread evenly, ids numbered from `start`."""
    nouns = lexicon.take(2 * n, "nouns")
    dims = [COMPARATIVES[i % len(COMPARATIVES)] for i in range(n)]
    rng.shuffle(dims)
    facts = []
    for i, pair in enumerate(dims):
        phrase = pair[rng.randrange(2)]
        facts.append({"fact_id": f"{WORLD}/f{start + i:04d}", "world": WORLD, "subject": nouns[2 * i],
                      "relation": RELATION[phrase], "object": nouns[2 * i + 1]})
    return facts


def _items(facts: list[dict], prefix: str) -> list[dict]:
    """A reversal and a rephrase item per fact; `prefix` marks validation splits."""
    items = []
    for i, f in enumerate(facts):
        s, o, rel, inv = f["subject"], f["object"], PHRASE[f["relation"]], PHRASE[INVERSE[f["relation"]]]
        common = {"world": WORLD, "subtask": "comparison", "answer_index": 0, "support_fact_ids": [f["fact_id"]]}
        items.append({"item_id": f"{WORLD}/{prefix}reversal/{i:04d}", "split": f"{prefix}reversal",
                      "prompt": f"{o} are", "choices": [f" {inv} than {s}", f" {rel} than {s}"], **common})
        items.append({"item_id": f"{WORLD}/{prefix}rephrase/{i:04d}", "split": f"{prefix}rephrase",
                      "prompt": f"Compared to {o}, {s} are", "choices": [f" {rel}", f" {inv}"], **common})
    return items


def _lead_ins(k: int, rng: random.Random) -> list[str]:
    """k lead-in templates, distinct while there are enough of them."""
    out: list[str] = []
    while len(out) < k:
        out += rng.sample(LEAD_INS, min(len(LEAD_INS), k - len(out)))
    return out


def _orders(facts: list[dict]) -> dict[int, dict[str, dict[str, list[str]]]]:
    """Per dimension: 'up' edges a -> b (a ranks above b) with the fact ids of the path."""
    edges: dict[int, dict[str, dict[str, list[str]]]] = defaultdict(lambda: defaultdict(dict))
    for f in facts:
        dim, up = DIMENSION[f["relation"]]
        a, b = (f["subject"], f["object"]) if up else (f["object"], f["subject"])
        edges[dim][a][b] = [f["fact_id"]]
    for dim, graph in edges.items():  # transitive closure, keeping the first path found
        changed = True
        while changed:
            changed = False
            for a in sorted(graph):
                for b in sorted(graph[a]):
                    for c, path in sorted(graph.get(b, {}).items()):
                        if c != a and c not in graph[a]:
                            graph[a][c] = graph[a][b] + path
                            changed = True
    return edges


def _up_relation(dim: int) -> tuple[str, str]:
    up, down = COMPARATIVES[dim]
    return RELATION[up], RELATION[down]


def closure(facts: list[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for dim, graph in _orders(facts).items():
        up, down = _up_relation(dim)
        for a, below in graph.items():
            for b in below:
                out |= {(a, up, b), (b, down, a)}
    return out


def oracle(facts: list[dict]) -> list[tuple[str, list[str]]]:
    """Every true comparison not stated as a fact: reversals and transitive deductions."""
    stated = {(f["subject"], f["relation"], f["object"]) for f in facts}
    out = []
    for dim, graph in sorted(_orders(facts).items()):
        up, down = _up_relation(dim)
        for a in sorted(graph):
            for b, path in sorted(graph[a].items()):
                for s, rel, o in ((a, up, b), (b, down, a)):
                    if (s, rel, o) not in stated:
                        out.append((STATEMENT.format(s=s, rel=PHRASE[rel], o=o) + ".", sorted(path)))
    return out


def parse(sentence: str, facts: list[dict]) -> list[tuple[str, str, str]] | None:
    entities = {w.lower(): w for f in facts for w in (f["subject"], f["object"])}

    def one(text: str):
        found = match_first(_PATTERNS, strip_lead_in(normalise(text), _LEAD))
        if not found:
            return None
        m = found[1]
        s, o = entities.get(m["s"].lower()), entities.get(m["o"].lower())
        rel = RELATION.get(" ".join(m["rel"].lower().split()))
        if s is None or o is None or rel is None:
            return None
        return [(s, rel, o)]

    return parse_text(sentence, one)
