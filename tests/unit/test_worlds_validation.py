"""Validation splits: items made like the test items, on facts no test item uses, so a recipe
chosen on them does not look at the reported tests."""

from __future__ import annotations

from collections import Counter

from pipeline.data.config import ReversalsConfig
from pipeline.worlds import VALIDATION_PREFIX, is_validation, world_module


def build(**overrides):
    return world_module("reversals").build(ReversalsConfig(size="demo", **overrides), 0)


def test_validation_items_mirror_the_test_splits_on_their_own_facts():
    docs, items, facts = build(n_facts=12, validation_facts=7, articles_per_fact=2)
    splits = Counter(i["split"] for i in items)
    assert splits == {"reversal": 12, "rephrase": 12, "val_reversal": 7, "val_rephrase": 7}
    test_facts = {f for i in items if not is_validation(i["split"]) for f in i["support_fact_ids"]}
    val_facts = {f for i in items if is_validation(i["split"]) for f in i["support_fact_ids"]}
    assert len(test_facts) == 12 and len(val_facts) == 7 and not test_facts & val_facts
    # every validation fact is trained as often as a test fact
    stated = Counter(f for d in docs for f in d["facts"])
    assert {stated[f] for f in test_facts | val_facts} == {2}
    assert len(facts) == 19
    words = lambda ids: {w for f in facts if f["fact_id"] in ids for w in (f["subject"], f["object"])}
    assert not words(test_facts) & words(val_facts)
    # same question shapes: a validation item's prompt is a test prompt with other words
    for split in ("reversal", "rephrase"):
        shapes = {len(i["choices"]) for i in items if i["split"] == split}
        assert shapes == {len(i["choices"]) for i in items if i["split"] == VALIDATION_PREFIX + split}


def test_no_validation_facts_no_validation_items():
    _, items, facts = build(n_facts=5, validation_facts=0)
    assert len(facts) == 5 and not any(is_validation(i["split"]) for i in items)
    assert not is_validation("reversal") and is_validation("val_reversal")
