"""The oracle augmenter: a world's true reversals and deductions, written as Doc rows.

It is the upper bound of what augmentation can give: every sentence is true and every inference
a test needs is stated. The sentences come from the world module's `oracle(facts)`; each row
keeps the ids of the facts it derives from and, as its source, the first training document
(by id) that states one of them.
"""

from __future__ import annotations

from collections import defaultdict

from pipeline.augment.config import OracleCaps, world_cap
from pipeline.augment.plan import seeded_subset
from pipeline.augment.postprocess import doc_id


def oracle_docs(world: str, module, facts: list[dict], train_docs: list[dict]) -> list[dict]:
    """Doc rows (origin augment:oracle) for one world, in the order the world module lists them."""
    stated_by: dict[str, list[str]] = defaultdict(list)
    for doc in sorted(train_docs, key=lambda d: d["doc_id"]):
        for fact_id in doc.get("facts") or ():
            stated_by[fact_id].append(doc["doc_id"])
    known = {f["fact_id"] for f in facts}
    rows = []
    for i, entry in enumerate(module.oracle(facts)):
        try:
            sentence, fact_ids = entry
        except (TypeError, ValueError):
            raise ValueError(f"world {world!r}: oracle entry {i} is {entry!r}; expected (sentence, [fact_id, ...])") from None
        if not isinstance(sentence, str) or not sentence.strip():
            raise ValueError(f"world {world!r}: oracle entry {i} has no sentence: {entry!r}")
        unknown = [f for f in fact_ids if f not in known]
        if unknown:
            raise ValueError(f"world {world!r}: oracle sentence {sentence!r} cites unknown fact {unknown[0]!r}")
        sources = [d for f in fact_ids for d in stated_by.get(f, ())]
        rows.append({
            "doc_id": doc_id("oracle", world, sentence), "world": world, "text": sentence.strip(),
            "origin": "augment:oracle", "source_doc_id": min(sources) if sources else None,
            "facts": list(fact_ids), "completion_start": 0,
        })
    return rows


def asked_rows(rows: list[dict], module, facts: list[dict], items: list[dict]) -> set[str]:
    """Doc ids of the oracle rows (one world's) that state a triple some item asks and the
    training facts do not state: the inferences the tests (and validation splits) need."""
    from pipeline.augment.audit import item_triples

    stated = {(f["subject"], f["relation"], f["object"]) for f in facts}
    asked = {t for item in items for t in item_triples(item, module, facts) or () if t not in stated}
    return {r["doc_id"] for r in rows if any(tuple(t) in asked for t in module.parse(r["text"], facts) or ())}


def cap_per_world(rows: list[dict], caps: OracleCaps, seed: int, asked: set[str] = frozenset(),
                  validation_asked: set[str] = frozenset()) -> list[dict]:
    """At most its cap (`caps`: an `augment.oracle_max_per_world` value) rows of each world,
    worlds in name order, each world's in their own order; a world without a cap keeps all. The
    rows in `asked` (doc ids, `asked_rows` of the test items) are kept first, a seeded sample of
    them (`seeded_subset`) where there are more than the cap; then those in
    `validation_asked` (the validation items'), so that turning validation splits on does not take
    the budget from what the tests need; the rest of the budget is a seeded sample of the others.
    So a capped oracle still states what the tests need: a uniform sample of the families world's
    800 sentences at 60 stated 8 of 132 tested reversals."""
    out = []
    for world in sorted({r["world"] for r in rows}):
        mine = [r for r in rows if r["world"] == world]
        limit = world_cap(caps, world)
        if limit is None:
            out += mine
            continue
        first = seeded_subset([r for r in mine if r["doc_id"] in asked], limit, seed, f"oracle/{world}/asked")
        val = [r for r in mine if r["doc_id"] in validation_asked and r["doc_id"] not in asked]
        if val and len(first) < limit:
            first += seeded_subset(val, limit - len(first), seed, f"oracle/{world}/validation")
        taken = {id(r) for r in first}
        others = [r for r in mine if id(r) not in taken and r["doc_id"] not in asked]
        rest = seeded_subset(others, limit - len(first), seed, f"oracle/{world}") if len(first) < limit else []
        kept = taken | {id(r) for r in rest}
        out += [r for r in mine if id(r) in kept]
    return out
