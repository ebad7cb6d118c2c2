"""Semantic structure: a renamed hierarchy of animals, plants and objects, described in wiki-like
documents; tests of rephrasings, reversals, deductions and held-out categories.

Facts are each category's parent (is_a) and own properties and relations (semantic_tree.py);
properties and relations are inherited by every descendant. Documents (min..max sentences)
each focus on one category: its facts first (the first document of a category states all of
them), then facts of its parent, children and siblings; some documents are QA pairs. Only facts
are ever stated, never an inherited or reversed one.
Splits (subtask = the tested relation):
- rephrase: a stated fact in a phrasing used only in tests;
- reversal: a stated fact reversed ("One kind of abme is the" -> " grud");
- syllogism: a deduction from two or more facts (inherited property, grandparent category);
- category_holdout: for a held-out leaf whose only fact is its parent, every inference;
- val_rephrase, val_reversal, val_syllogism, val_category_holdout: the same tests on up to
  `validation_items` further candidates (triples) of each split, ones no test item of that split
  uses, for choosing a training recipe without looking at the test items. They are drawn with a
  random generator of their own, so the docs, facts and test items are the same with or without
  them.
Distractors are hard: false of the item's subject, true of another entity in the world.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict

from pipeline.worlds import VALIDATION_PREFIX, WorldError
from pipeline.worlds import semantic_text as text
from pipeline.worlds.choices import balance_answers, pick_distractors, sample_evenly
from pipeline.worlds.lexicon import Lexicon
from pipeline.worlds.semantic_tree import OBJECT_ROLE, Category, categories

WORLD = "semantic"
SPLITS = ("rephrase", "reversal", "syllogism", "category_holdout")
parse = text.parse
log = logging.getLogger(__name__)


def build(cfg, seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    rng = random.Random(f"{WORLD}:{seed}")
    cats = _select(categories(), cfg.n_categories, rng)
    leaves = [c.label for c in cats if c.parent and not any(d.parent == c.label for d in cats)]
    if cfg.n_holdout > len(leaves) - 1:
        raise WorldError(f"n_holdout: {cfg.n_holdout} held-out categories asked for, but the "
                         f"{len(cats)} categories kept have only {len(leaves)} leaves (at most {len(leaves) - 1} can be held out)")
    holdout = set(rng.sample(leaves, cfg.n_holdout))
    facts, names = _facts(cats, holdout, Lexicon(WORLD, seed))
    held = {names[h] for h in holdout}
    docs = _docs(cfg, facts, held, rng)
    derived, objects_of, candidates = _candidates(facts, held)
    items, used = _items(cfg, candidates, derived, objects_of, rng)
    validation = _validation(cfg, candidates, used, derived, objects_of, seed)
    return docs, balance_answers(items, rng) + validation, facts


def _select(tree: tuple[Category, ...], n: int | None, rng: random.Random) -> list[Category]:
    """A connected part of the tree with about n categories: random leaves plus their ancestors."""
    if n is None or n >= len(tree):
        return list(tree)
    by_label = {c.label: c for c in tree}
    leaves = [c.label for c in tree if not any(d.parent == c.label for d in tree)]
    rng.shuffle(leaves)
    keep: set[str] = set()
    for leaf in leaves:
        path, node = [], leaf
        while node is not None and node not in keep:
            path.append(node)
            node = by_label[node].parent
        if len(keep) + len(path) <= n:
            keep.update(path)
    return [c for c in tree if c.label in keep]


def _facts(cats: list[Category], holdout: set[str], lexicon: Lexicon) -> tuple[list[dict], dict[str, str]]:
    """The facts (held-out categories keep only their parent), and category label -> word."""
    names = dict(zip([c.label for c in cats], lexicon.take(len(cats), "categories")))
    kept = [(c, rel, obj) for c in cats if c.label not in holdout for rel, obj in c.own]
    labels: dict[str, list[str]] = defaultdict(list)
    for _, rel, obj in kept:
        role = OBJECT_ROLE[rel]
        if obj not in labels[role]:
            labels[role].append(obj)
    words = {(role, label): w for role in sorted(labels)
             for label, w in zip(labels[role], lexicon.take(len(labels[role]), f"{role}s"))}
    rows = []
    for c in cats:
        if c.parent:
            rows.append((names[c.label], "is_a", names[c.parent]))
        if c.label not in holdout:
            rows += [(names[c.label], rel, words[(OBJECT_ROLE[rel], obj)]) for rel, obj in c.own]
    facts = [{"fact_id": f"{WORLD}/f{i:04d}", "world": WORLD, "subject": s, "relation": r, "object": o}
             for i, (s, r, o) in enumerate(rows)]
    return facts, names


# ------------------------------------------------------------------ closure with provenance


def derive(facts: list[dict]) -> dict[tuple[str, str, str], list[str]]:
    """Every true triple -> the fact ids of its shortest derivation (facts, inheritance along
    is_a, transitive is_a, and the inverse of each invertible triple)."""
    parents: dict[str, list[tuple[str, str]]] = defaultdict(list)
    own: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for f in facts:
        if f["relation"] == "is_a":
            parents[f["subject"]].append((f["object"], f["fact_id"]))
        else:
            own[f["subject"]].append((f["relation"], f["object"], f["fact_id"]))
    out: dict[tuple[str, str, str], list[str]] = {}
    nodes = sorted(set(parents) | set(own) | {p for ps in parents.values() for p, _ in ps})
    for c in nodes:
        frontier, seen = [(c, [])], {c}
        while frontier:  # breadth first up the hierarchy: nearest ancestors first
            nxt = []
            for node, chain in frontier:
                if node != c:
                    out.setdefault((c, "is_a", node), chain)
                for rel, obj, fid in own[node]:
                    out.setdefault((c, rel, obj), chain + [fid])
                for p, fid in parents[node]:
                    if p == c:
                        raise ValueError(f"semantic: the is_a links of {c!r} form a cycle")
                    if p not in seen:
                        seen.add(p)
                        nxt.append((p, chain + [fid]))
            frontier = nxt
    for (s, r, o), ids in list(out.items()):
        if r in text.INVERSE:
            out.setdefault((o, text.INVERSE[r], s), ids)
    return out


def closure(facts: list[dict]) -> set[tuple[str, str, str]]:
    return set(derive(facts))


def statement(s: str, r: str, o: str) -> str:
    """The plain sentence of a triple (a TRAIN template, or the REVERSE one of an inverse)."""
    template = text.REVERSE[r] if r in text.REVERSE else text.TRAIN[r][0]
    return text.render(template, s, o) + "."


def oracle(facts: list[dict]) -> list[tuple[str, list[str]]]:
    stated = {(f["subject"], f["relation"], f["object"]) for f in facts}
    return [(statement(*t), sorted(ids)) for t, ids in sorted(derive(facts).items()) if t not in stated]


# ------------------------------------------------------------------ documents


def _docs(cfg, facts: list[dict], held: set[str], rng: random.Random) -> list[dict]:
    by_subject: dict[str, list[dict]] = defaultdict(list)
    for f in facts:
        by_subject[f["subject"]].append(f)
    parent = {f["subject"]: f["object"] for f in facts if f["relation"] == "is_a"}
    children: dict[str, list[str]] = defaultdict(list)
    for child, p in parent.items():
        children[p].append(child)
    focus = [c for c in by_subject if c not in held]
    if cfg.n_docs < len(focus):
        raise WorldError(f"n_docs: {cfg.n_docs} documents cannot state the facts of {len(focus)} categories; "
                         f"use at least {len(focus)}")
    order: list[str] = []
    while len(order) < cfg.n_docs:
        order += rng.sample(focus, len(focus))
    docs, described = [], set()
    for i, c in enumerate(order[:cfg.n_docs]):
        own = by_subject[c]
        if c in described:
            chosen = rng.sample(own, rng.randint(min(2, len(own)), len(own)))
        else:  # a category's first document states all its facts, and its held-out children's parent
            chosen = own + [by_subject[h][0] for h in children[c] if h in held]
            described.add(c)
        related = [f for k in [parent.get(c)] + children[c] + children.get(parent.get(c), [])
                   if k is not None and k != c for f in by_subject[k] if f not in chosen]
        related = sorted({f["fact_id"]: f for f in related}.values(), key=lambda f: f["fact_id"])
        rng.shuffle(related)
        target = rng.randint(cfg.min_sentences, cfg.max_sentences)
        chosen = chosen + related[:max(0, target - len(chosen))]
        qa = rng.random() < cfg.qa_fraction
        docs.append({"doc_id": f"{WORLD}/d{i:05d}", "world": WORLD, "origin": "train",
                     "text": _render_doc(chosen, qa, rng), "facts": [f["fact_id"] for f in chosen]})
    missing = {f["fact_id"] for f in facts} - {fid for d in docs for fid in d["facts"]}
    if missing:
        raise AssertionError(f"semantic: facts stated in no document: {sorted(missing)[:5]}")
    return docs


def _render_doc(chosen: list[dict], qa: bool, rng: random.Random) -> str:
    style = rng.randrange(3)  # which TRAIN phrasing most sentences of this document use
    sentences = []
    for k, f in enumerate(chosen):
        s, r, o = f["subject"], f["relation"], f["object"]
        if qa:
            answer = text.render(text.TRAIN[r][0], s, o)
            sentences.append(f"{text.render(text.QUESTION[r], s)} A: {answer}.")
            continue
        phrasing = style if rng.random() < 0.7 else rng.randrange(3)
        sentence = text.render(text.TRAIN[r][phrasing], s, o)
        if k > 0 and rng.random() < 0.25:
            sentence = f"{rng.choice(text.MARKERS)} {sentence[0].lower()}{sentence[1:]}"
        sentences.append(sentence + ".")
    return " ".join(sentences)


# ------------------------------------------------------------------ test items


def _candidates(facts: list[dict], held: set[str]):
    """Every true triple (with its derivation), relation -> object -> subjects it is true of, and
    split -> the triples that split can test, in a fixed order."""
    derived = derive(facts)
    stated = {(f["subject"], f["relation"], f["object"]): f for f in facts}
    objects_of: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for s, r, o in derived:
        objects_of[r][o].add(s)
    candidates: dict[str, list[tuple[str, str, str]]] = {split: [] for split in SPLITS}
    for t, ids in sorted(derived.items()):
        s, r, o = t
        if held & {s, o}:
            if t not in stated:
                candidates["category_holdout"].append(t)
        elif r in text.FORWARD:
            if (o, text.FORWARD[r], s) in stated:
                candidates["reversal"].append(t)
        elif t in stated:
            candidates["rephrase"].append(t)
        elif len(ids) >= 2:
            candidates["syllogism"].append(t)
    return derived, objects_of, candidates


def _items(cfg, candidates, derived, objects_of, rng: random.Random):
    """The test items (correct choice first), and split -> the candidates they drew."""
    items, used = [], {}
    for split in SPLITS:
        used[split] = sample_evenly(candidates[split], lambda t: t[1], cfg.items_per_split, rng)
        for k, t in enumerate(used[split]):
            item = _item(split, t, derived, objects_of, cfg.n_choices, rng)
            if item is not None:
                items.append({"item_id": f"{WORLD}/{split}/{k:04d}", **item})
    return items, used


def _distractor_pool(triple, derived, objects_of) -> list[str]:
    """Hard distractors: objects this relation has for some other subject, false for this one."""
    s, r, o = triple
    return [w for w, subjects in objects_of[r].items()
            if w not in (o, s) and (s, r, w) not in derived and subjects - {s}]


def _item(split, triple, derived, objects_of, n_choices, rng) -> dict | None:
    """One item of `split` ("val_" ones are made like the test split they mirror), correct choice
    first; None when the triple has no hard distractor."""
    s, r, o = triple
    if split.removeprefix(VALIDATION_PREFIX) == "rephrase":
        template = text.REPHRASE[r]
    else:
        template = text.REVERSE[r] if r in text.REVERSE else text.TRAIN[r][0]
    prompt, correct = text.split_item(template, s, o)
    wrong = pick_distractors(_distractor_pool(triple, derived, objects_of), n_choices - 1, rng)
    if not wrong:
        return None
    return {"world": WORLD, "split": split, "subtask": r, "prompt": prompt,
            "choices": [correct] + [" " + w for w in wrong], "answer_index": 0,
            "support_fact_ids": sorted(derived[triple])}


# ------------------------------------------------------------------ validation items


def _validation(cfg, candidates, used, derived, objects_of, seed: int) -> list[dict]:
    """Validation items: per split, `validation_items` of the candidates that split's test items
    did not draw (`used[split]`) and that have hard distractors, or as many as are left, sampled
    evenly over sub-tasks like the test items. Candidates, distractors and answer positions come
    from a random generator of their own, so that adding them changes nothing else the world
    builds."""
    if not cfg.validation_items:
        return []
    rng = random.Random(f"{WORLD}:validation:{seed}")
    items, short = [], []
    for split in SPLITS:
        taken = set(used[split])
        unused = [t for t in candidates[split] if t not in taken and _distractor_pool(t, derived, objects_of)]
        if len(unused) < cfg.validation_items:
            short.append(f"{split}: {len(unused)}")
        name = VALIDATION_PREFIX + split
        for k, t in enumerate(sample_evenly(unused, lambda t: t[1], cfg.validation_items, rng)):
            items.append({"item_id": f"{WORLD}/{name}/{k:04d}", **_item(name, t, derived, objects_of, cfg.n_choices, rng)})
    if short:
        log.warning("semantic: validation_items %d asks for more candidates than the test items leave unused; "
                    "taking what there is (%s)", cfg.validation_items, "; ".join(short))
    return balance_answers(items, rng)
