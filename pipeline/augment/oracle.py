"""The oracle augmenter: a world's true reversals and deductions, written as Doc rows.

It is the upper bound of what augmentation can give: every sentence is true and every inference
a test needs is stated. The sentences come from the world module's `oracle(facts)`; each row
keeps the ids of the facts it derives from and, as its source, the first training document
(by id) that states one of them.
"""

from __future__ import annotations

from collections import defaultdict

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


def cap_per_world(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    """At most `limit` rows per world (see `seeded_subset`), worlds in name order; None keeps all."""
    if limit is None:
        return rows
    return [r for world in sorted({r["world"] for r in rows})
            for r in seeded_subset([r for r in rows if r["world"] == world], limit, seed, f"oracle/{world}")]
