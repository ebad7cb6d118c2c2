"""Family trees: invented people over three generations; reversal and composition tests.

Each tree: a founding couple, their children (each married to a partner from outside the
family), and the grandchildren. Training documents describe one couple's household at a time
and state every parent-child link in ONE direction, chosen at random per link ("Femp is the
mother of Glon" or "Glon is the son of Femp"), plus the marriage ("Femp is the wife of Yomp").
Gendered words (mother, son, ...) also state the subject's gender.
Splits (subtask = the tested relation):
- reversal: a stated link or marriage asked the other way round;
- composition: grandparent / grandchild, sibling, aunt or uncle / niece or nephew (derived);
- val_reversal, val_composition: `validation_items` further items per split, on the derived
  triples the test items do not ask (nor their inverses), for choosing a training recipe.
Distractors are other members of the same tree for whom the statement is false.
Relations: parent_of, child_of, grandparent_of, grandchild_of, sibling_of, aunt_uncle_of,
niece_nephew_of, spouse_of, and gender ((person, "gender", "female" | "male")).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict

from pipeline.worlds import VALIDATION_PREFIX
from pipeline.worlds.choices import balance_answers, pick_distractors, sample_evenly
from pipeline.worlds.lexicon import Lexicon
from pipeline.worlds.templates import (compile_template, lead_in_pattern, match_first, normalise,
                                       parse_text, strip_lead_in)

log = logging.getLogger(__name__)

WORLD = "families"
SPLITS = ("reversal", "composition")
#: relation -> (word for a female subject, word for a male subject, neutral word)
WORDS = {
    "parent_of": ("mother", "father", "parent"), "child_of": ("daughter", "son", "child"),
    "grandparent_of": ("grandmother", "grandfather", "grandparent"),
    "grandchild_of": ("granddaughter", "grandson", "grandchild"),
    "sibling_of": ("sister", "brother", "sibling"), "aunt_uncle_of": ("aunt", "uncle", "aunt or uncle"),
    "niece_nephew_of": ("niece", "nephew", "niece or nephew"), "spouse_of": ("wife", "husband", "spouse"),
}
INVERSE = {"parent_of": "child_of", "child_of": "parent_of", "grandparent_of": "grandchild_of",
           "grandchild_of": "grandparent_of", "sibling_of": "sibling_of",
           "aunt_uncle_of": "niece_nephew_of", "niece_nephew_of": "aunt_uncle_of", "spouse_of": "spouse_of"}
COMPOSITION = {"grandparent_of": "grandparent", "grandchild_of": "grandparent", "sibling_of": "sibling",
               "aunt_uncle_of": "aunt_uncle", "niece_nephew_of": "aunt_uncle"}
#: word -> (relation, gender or None)
MEANING = {w: (rel, g) for rel, ws in WORDS.items() for w, g in zip(ws, ("female", "male", None))}
TEMPLATES = ("{x} is the {w} of {y}", "{x} is {y}'s {w}")
_WORD = "|".join(sorted((w.replace(" ", r"\s+") for w in MEANING), key=len, reverse=True))
_PATTERNS = [(t, compile_template(t, w=_WORD)) for t in TEMPLATES]
_LEAD = lead_in_pattern(("In this family,", "Also,", "As the records show,"))


def say(a: str, rel: str, b: str, gender: str | None, template: str = TEMPLATES[0]) -> str:
    word = WORDS[rel][{"female": 0, "male": 1, None: 2}[gender]]
    return template.format(x=a, w=word, y=b)


def build(cfg, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    rng = random.Random(f"{WORLD}:{seed}")
    lexicon = Lexicon(WORLD, seed)
    facts, households, trees = [], [], []
    for t in range(cfg.n_trees):
        people, tree_households = _tree(cfg, rng)
        names = [w.capitalize() for w in lexicon.take(len(people), "names")]
        ids = {}
        for (person, gender), name in zip(people, names):
            ids[person] = name
            facts.append(_fact(len(facts), name, "gender", gender))
        trees.append(names)
        gender_fact = {f["subject"]: f for f in facts if f["relation"] == "gender"}
        for (a, b), kids in tree_households:
            facts.append(_fact(len(facts), ids[a], "spouse_of", ids[b]))
            stated = [facts[-1]]
            for c in kids:
                for p in (a, b):
                    up = rng.random() < 0.5
                    s, o = (ids[p], ids[c]) if up else (ids[c], ids[p])
                    facts.append(_fact(len(facts), s, "parent_of" if up else "child_of", o))
                    stated.append(facts[-1])
            households.append((stated, gender_fact))
    docs = []
    for stated, gender_fact in households:
        for _ in range(cfg.docs_per_family):
            order = rng.sample(stated, len(stated))
            sentences, fact_ids = [], []
            for f in order:
                g = gender_fact[f["subject"]]
                sentences.append(say(f["subject"], f["relation"], f["object"], g["object"], rng.choice(TEMPLATES)) + ".")
                fact_ids += [f["fact_id"], g["fact_id"]]
            docs.append({"doc_id": f"{WORLD}/d{len(docs):05d}", "world": WORLD, "origin": "train",
                         "text": " ".join(sentences), "facts": list(dict.fromkeys(fact_ids))})
    view = _view(facts, trees)
    items, candidates, used = _items(cfg, facts, view, rng)
    return docs, balance_answers(items, rng) + _validation(cfg, view, candidates, used, seed), facts


def _fact(i: int, s: str, r: str, o: str) -> dict:
    return {"fact_id": f"{WORLD}/f{i:05d}", "world": WORLD, "subject": s, "relation": r, "object": o}


def _tree(cfg, rng):
    """People [(index, gender)] and households [((spouse, spouse), [children])] of one tree."""
    people: list[tuple[int, str]] = []

    def person(gender=None):
        people.append((len(people), gender or rng.choice(("female", "male"))))
        return len(people) - 1

    households = []
    generation = [(person("female"), person("male"))]
    for depth in range(2):
        nxt = []
        for couple in generation:
            kids = [person() for _ in range(rng.randint(cfg.min_children, cfg.max_children))]
            households.append((couple if rng.random() < 0.5 else couple[::-1], kids))
            if depth == 0:
                nxt += [(c, person("male" if people[c][1] == "female" else "female")) for c in kids]
        generation = nxt
    return people, households


# ------------------------------------------------------------------ closure


def derive(facts: list[dict]) -> dict[tuple[str, str, str], list[str]]:
    """Every true triple -> fact ids it derives from."""
    out: dict[tuple[str, str, str], list[str]] = {}
    parents: dict[str, dict[str, str]] = defaultdict(dict)  # child -> parent -> fact id
    spouses: dict[str, dict[str, str]] = defaultdict(dict)
    for f in facts:
        s, r, o, fid = f["subject"], f["relation"], f["object"], f["fact_id"]
        if r == "gender":
            out[(s, r, o)] = [fid]
        elif r in ("parent_of", "child_of"):
            p, c = (s, o) if r == "parent_of" else (o, s)
            parents[c][p] = fid
        elif r == "spouse_of":
            spouses[s][o] = spouses[o][s] = fid
    children: dict[str, dict[str, str]] = defaultdict(dict)
    for c, ps in parents.items():
        for p, fid in ps.items():
            children[p][c] = fid

    def add(a, rel, b, ids):
        if a != b:
            out.setdefault((a, rel, b), sorted(set(ids)))
            out.setdefault((b, INVERSE[rel], a), sorted(set(ids)))

    for a, bs in sorted(spouses.items()):
        for b, fid in bs.items():
            add(a, "spouse_of", b, [fid])
    for c, ps in sorted(parents.items()):
        for p, fid in sorted(ps.items()):
            add(p, "parent_of", c, [fid])
            for g, fid2 in sorted(parents.get(p, {}).items()):
                add(g, "grandparent_of", c, [fid, fid2])
            for sib, fid3 in sorted(children[p].items()):
                if sib == c:  # c is no sibling of itself, nor aunt or uncle of its own children
                    continue
                add(sib, "sibling_of", c, [fid, fid3])
                for n, fid4 in sorted(children.get(c, {}).items()):
                    add(sib, "aunt_uncle_of", n, [fid4, fid, fid3])
                    for sp, fid5 in sorted(spouses.get(sib, {}).items()):
                        add(sp, "aunt_uncle_of", n, [fid4, fid, fid3, fid5])  # by marriage
    return out


def closure(facts: list[dict]) -> set[tuple[str, str, str]]:
    return set(derive(facts))


def oracle(facts: list[dict]) -> list[tuple[str, list[str]]]:
    gender = {f["subject"]: f["object"] for f in facts if f["relation"] == "gender"}
    stated = {(f["subject"], f["relation"], f["object"]) for f in facts}
    return [(say(a, r, b, gender.get(a)) + ".", ids) for (a, r, b), ids in sorted(derive(facts).items())
            if r != "gender" and (a, r, b) not in stated]


def parse(text: str, facts: list[dict]) -> list[tuple[str, str, str]] | None:
    people = {w.lower(): w for f in facts if f["relation"] == "gender" for w in (f["subject"],)}

    def one(sentence: str):
        found = match_first(_PATTERNS, strip_lead_in(normalise(sentence), _LEAD))
        if not found:
            return None
        m = found[1]
        a, b = people.get(m["x"].lower()), people.get(m["y"].lower())
        rel, gender = MEANING[" ".join(m["w"].lower().split())]
        if a is None or b is None:
            return None
        return [(a, rel, b)] + ([(a, "gender", gender)] if gender else [])

    return parse_text(text, one)


# ------------------------------------------------------------------ test items


def _candidates(facts: list[dict], derived: dict) -> dict[str, list[tuple[tuple[str, str, str], str]]]:
    """Per split, the askable triples with their sub-task: reversal, the unstated direction of a
    stated link; composition, a derived relation of two or more links."""
    stated = {(f["subject"], f["relation"], f["object"]) for f in facts}
    candidates: dict[str, list] = {"reversal": [], "composition": []}
    for (a, r, b) in sorted(derived):
        if r == "gender" or (a, r, b) in stated:
            continue
        if (b, INVERSE[r], a) in stated:
            candidates["reversal"].append(((a, r, b), r))
        elif r in COMPOSITION:
            candidates["composition"].append(((a, r, b), COMPOSITION[r]))
    return candidates


def _item(item_id: str, split: str, triple, subtask: str, facts_view, n_choices: int, rng: random.Random) -> dict:
    derived, gender, tree_of = facts_view
    a, r, b = triple
    pool = [p for p in tree_of[a] if p not in (a, b) and (a, r, p) not in derived]
    wrong = pick_distractors(pool, n_choices - 1, rng)
    return {"item_id": item_id, "world": WORLD, "split": split, "subtask": subtask,
            "prompt": say(a, r, "", gender[a]).rstrip(), "choices": [" " + b] + [" " + w for w in wrong],
            "answer_index": 0, "support_fact_ids": derived[triple]}


def _view(facts: list[dict], trees: list[list[str]]):
    """What an item is made from: every true triple (-> its fact ids), each person's gender and tree."""
    gender = {f["subject"]: f["object"] for f in facts if f["relation"] == "gender"}
    return derive(facts), gender, {name: members for members in trees for name in members}


def _items(cfg, facts: list[dict], view, rng: random.Random):
    """The test items, every split's candidates, and the triples the test items ask."""
    candidates = _candidates(facts, view[0])
    items, used = [], {}
    for split in SPLITS:
        chosen = sample_evenly(candidates[split], lambda c: c[1], cfg.items_per_split, rng)
        used[split] = {t for t, _ in chosen}
        items += [_item(f"{WORLD}/{split}/{k:04d}", split, t, sub, view, cfg.n_choices, rng)
                  for k, (t, sub) in enumerate(chosen)]
    return items, candidates, used


def _validation(cfg, view, candidates, used, seed: int) -> list[dict]:
    """Validation items: per split, `validation_items` of the candidates no test item asks, in
    either direction (a test item asking "Glon is the grandson of Femp" rules out "Femp is the
    grandmother of Glon"), or as many as are left, sampled evenly over sub-tasks like the test
    items. Candidates, distractors and answer positions come from a random generator of their own,
    so adding them changes nothing else the world builds."""
    if not cfg.validation_items:
        return []
    rng = random.Random(f"{WORLD}:validation:{seed}")
    asked = {t for ts in used.values() for t in ts}
    asked |= {(b, INVERSE[r], a) for a, r, b in asked}
    items, short = [], []
    for split in SPLITS:
        unused = [c for c in candidates[split] if c[0] not in asked]
        if len(unused) < cfg.validation_items:
            short.append(f"{split}: {len(unused)}")
        name = VALIDATION_PREFIX + split
        items += [_item(f"{WORLD}/{name}/{k:04d}", name, t, sub, view, cfg.n_choices, rng)
                  for k, (t, sub) in enumerate(sample_evenly(unused, lambda c: c[1], cfg.validation_items, rng))]
    if short:
        log.warning("families: validation_items %d asks for more candidates than the test items leave unused; "
                    "taking what there is (%s)", cfg.validation_items, "; ".join(short))
    return balance_answers(items, rng)
