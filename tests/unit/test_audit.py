import types

import pytest

import test_augment_fake_world as fake
from pipeline.augment.audit import build_audit, format_audit, label
from pipeline.augment.oracle import cap_per_world, oracle_docs
from pipeline.config import RunConfig
from pipeline.records import Doc, validate_rows

DOCS, ITEMS, FACTS = fake.build()
W = fake.WORLD


def aug(text, strategy="local"):
    return {"doc_id": f"a-{text}", "world": W, "text": text, "origin": f"augment:{strategy}", "source_doc_id": None,
            "facts": [], "completion_start": 0}


def test_label():
    closure = {("a", "r", "b")}
    assert label(None, closure) == "unverifiable"
    assert label([], closure) == "unverifiable"
    assert label([("a", "r", "b")], closure) == "entailed"
    assert label([("a", "r", "b"), ("b", "r", "a")], closure) == "contradicted"


def test_oracle_rows_are_valid_docs_with_facts_and_source():
    rows = oracle_docs(W, fake, FACTS, DOCS)
    validate_rows(Doc, rows)
    assert len(rows) == len(FACTS)
    first = rows[0]
    assert first["origin"] == "augment:oracle" and first["facts"] == [f"{W}-f0"]
    assert first["source_doc_id"] == f"{W}-d0-0"  # the first training doc stating the fact


def test_oracle_precision_and_reversal_coverage_are_100_percent():
    rows = oracle_docs(W, fake, FACTS, DOCS)
    audit = build_audit(rows, ITEMS, FACTS, {W: fake}, ["oracle"], {})
    s = audit["worlds"][W]["strategies"]["oracle"]
    assert s["sentences"] == len(FACTS) and s["entailed"] == len(FACTS) == s["entailed_new"]
    assert s["precision"] == 1.0 and s["contradiction_rate"] == 0.0
    assert s["reversal_coverage"] == 1.0
    assert s["coverage_by_split"]["rephrase"]["coverage"] == 0.0  # the oracle only states new inferences
    assert s["coverage"] == 0.5


def test_audit_counts_labels_and_coverage_per_strategy():
    rows = [
        aug("Glon are less dangerous than femp."),      # entailed, covers reversal item 0
        aug("Glon are more dangerous than femp."),      # contradicted
        aug("Femp like to swim."),                      # unverifiable
        aug("Troff are less heavy than yomp.", "global"),  # entailed, covers reversal item 1
        aug("Yomp are more heavy than troff.", "global"),  # entailed, but only restates a fact
    ]
    audit = build_audit(rows, ITEMS, FACTS, {W: fake}, ["local", "global"], {"local/fakecmp": {"kept": 3}})
    local = audit["worlds"][W]["strategies"]["local"]
    assert (local["entailed"], local["contradicted"], local["unverifiable"]) == (1, 1, 1)
    assert local["precision"] == pytest.approx(1 / 3, abs=1e-4) and local["contradiction_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert local["reversal_coverage"] == 0.25  # 1 of 4 reversal items
    assert local["examples"]["contradicted"] == ["Glon are more dangerous than femp."]
    glob = audit["worlds"][W]["strategies"]["global"]
    assert glob["precision"] == 1.0 and glob["reversal_coverage"] == 0.25
    assert glob["entailed"] == 2 and glob["entailed_new"] == 1
    assert audit["generation"] == {"local/fakecmp": {"kept": 3}}
    table = format_audit(audit)
    assert "fakecmp" in table and "33.3%" in table and "25.0%" in table


def test_strategy_without_sentences_has_no_precision_and_zero_coverage():
    audit = build_audit([], ITEMS, FACTS, {W: fake}, ["local"], {})
    s = audit["worlds"][W]["strategies"]["local"]
    assert s["sentences"] == 0 and s["precision"] is None and s["coverage"] == 0.0


def test_world_without_module_is_reported_not_audited():
    rows = [dict(aug("Alice is Bob's friend."), world="corpus")]
    audit = build_audit(rows, ITEMS, FACTS, {W: fake}, ["local"], {})
    assert audit["worlds"]["corpus"] == {"auditable": False, "reason": "no world module with parse/closure for this world"}
    assert "not audited" in format_audit(audit)
    no_facts = build_audit(rows, ITEMS, FACTS, {W: fake, "corpus": fake}, ["local"], {})
    assert no_facts["worlds"]["corpus"]["auditable"] is False and "no ground-truth facts" in no_facts["worlds"]["corpus"]["reason"]


def test_unparsed_items_are_counted_not_covered():
    items = ITEMS + [dict(ITEMS[0], item_id="odd", prompt="Which is wilder:")]
    audit = build_audit([], items, FACTS, {W: fake}, ["local"], {})
    assert audit["worlds"][W]["items_unparsed"] == 1


def test_bad_oracle_entries_name_the_world():
    bad = types.SimpleNamespace(oracle=lambda facts: [("Glon are small.", ["nope"])])
    with pytest.raises(ValueError, match="fakecmp.*unknown fact 'nope'"):
        oracle_docs(W, bad, FACTS, DOCS)
    worse = types.SimpleNamespace(oracle=lambda facts: ["just a string"])
    with pytest.raises(ValueError, match="oracle entry 0"):
        oracle_docs(W, worse, FACTS, DOCS)


def test_oracle_cap_keeps_a_seeded_ordered_sample_per_world():
    rows = [{"world": w, "doc_id": f"{w}{i}"} for w in ("a", "b") for i in range(10)] + [{"world": "c", "doc_id": "c0"}]
    capped = cap_per_world(rows, 3, seed=0)
    assert [sum(r["world"] == w for r in capped) for w in "abc"] == [3, 3, 1]
    assert capped == [r for r in rows if r in capped]  # original order kept
    assert capped == cap_per_world(rows, 3, seed=0) and capped != cap_per_world(rows, 3, seed=1)
    assert cap_per_world(rows, None, seed=0) == rows
    per_world = cap_per_world(rows, {"a": 2, "b": None}, seed=0)  # c not named: whole, like b
    assert [sum(r["world"] == w for r in per_world) for w in "abc"] == [2, 10, 1]
    assert [r for r in per_world if r["world"] == "a"] == [r for r in cap_per_world(rows, 2, seed=0) if r["world"] == "a"]


@pytest.mark.parametrize("caps, error", [
    ({"families": 50}, "augment.oracle_max_per_world: 'families' is not a world of this run"),
    ({"reversals": 0}, "oracle_max_per_world"),
    (0, "oracle_max_per_world"),
])
def test_oracle_caps_name_a_world_of_the_run_and_are_positive(caps, error):
    raw = {"name": "x", "data": {"reversals": {}}, "augment": {"oracle_max_per_world": caps}}
    with pytest.raises(ValueError, match=error):
        RunConfig.model_validate(raw)
    assert RunConfig.model_validate({**raw, "augment": {"oracle_max_per_world": {"reversals": 5}}}).augment.oracle_max_per_world == {"reversals": 5}


def test_oracle_cap_keeps_the_rows_items_ask_first():
    rows = [{"world": "a", "doc_id": f"a{i}"} for i in range(10)]
    kept = lambda capped: [r["doc_id"] for r in capped]  # noqa: E731
    assert cap_per_world(rows, 3, seed=0, asked=frozenset()) == cap_per_world(rows, 3, seed=0)
    for seed in range(5):
        two = kept(cap_per_world(rows, 3, seed, asked={"a7", "a2"}))
        assert len(two) == 3 and {"a2", "a7"} <= set(two) and two == sorted(two)
    many = kept(cap_per_world(rows, 3, 0, asked={f"a{i}" for i in range(5)}))
    assert len(many) == 3 and set(many) <= {f"a{i}" for i in range(5)}  # only asked rows when they fill the cap
    assert kept(cap_per_world(rows, 20, 0, asked={"a1"})) == kept(rows)


def test_oracle_cap_gives_validation_rows_what_the_test_rows_leave():
    rows = [{"world": "a", "doc_id": f"a{i}"} for i in range(10)]
    kept = lambda capped: set(r["doc_id"] for r in capped)  # noqa: E731
    test, val = {"a1", "a2"}, {f"a{i}" for i in range(3, 9)}
    for seed in range(5):
        capped = kept(cap_per_world(rows, 4, seed, asked=test, validation_asked=val))
        assert len(capped) == 4 and test <= capped and capped - test <= val  # tests first, then validation
    # validation rows that also fill the cap leave the tests' rows untouched; room left goes to the rest
    assert kept(cap_per_world(rows, 2, 0, asked=test, validation_asked=val)) == test
    assert kept(cap_per_world(rows, 5, 0, asked=test, validation_asked={"a3"})) >= {"a1", "a2", "a3"}
    assert len(cap_per_world(rows, 5, 0, asked=test, validation_asked={"a3"})) == 5
    # without validation rows the cap is what it was
    assert cap_per_world(rows, 4, 0, asked=test, validation_asked=frozenset()) == cap_per_world(rows, 4, 0, asked=test)


def test_capped_oracle_states_every_tested_inference_of_the_families_demo():
    from pipeline.augment.audit import audit_world
    from pipeline.augment.postprocess import training_index
    from pipeline.augment.stage import build_oracle
    from pipeline.config import RunConfig
    from pipeline.worlds import families
    from test_worlds import world_config

    docs, items, facts = families.build(world_config("families", "demo", validation_items=8), 0)
    cfg = RunConfig.model_validate({"name": "x", "conditions": ["ft+oracle"], "augment": {"oracle_max_per_world": 60}})
    rows, counts, _ = build_oracle(cfg, docs, facts, items, training_index(docs))
    assert len(rows) == 60 < counts["oracle/families"]["kept"]
    coverage = audit_world("families", families, facts, items, {"oracle": rows})["strategies"]["oracle"]["coverage_by_split"]
    assert {s: c["coverage"] for s, c in coverage.items()} == dict.fromkeys(
        ["composition", "reversal", "val_composition", "val_reversal"], 1.0)
    sampled = build_oracle(cfg, docs, facts, [], training_index(docs))[0]  # no items asked: a uniform sample
    assert len(sampled) == 60
    low = audit_world("families", families, facts, items, {"oracle": sampled})["strategies"]["oracle"]["reversal_coverage"]
    assert low < 0.5


def test_validation_items_do_not_crowd_the_tests_out_of_a_capped_oracle():
    """Semantic at demo size with 40 validation items per split asks more inferences than a cap
    of 60 states: every tested one is still stated, and the validation splits get the rest."""
    from pipeline.augment.audit import audit_world
    from pipeline.augment.postprocess import training_index
    from pipeline.augment.stage import build_oracle
    from pipeline.config import RunConfig
    from pipeline.worlds import semantic
    from test_worlds import world_config

    docs, items, facts = semantic.build(world_config("semantic", "demo", validation_items=40), 0)
    cfg = RunConfig.model_validate({"name": "x", "conditions": ["ft+oracle"], "augment": {"oracle_max_per_world": 60}})
    rows = build_oracle(cfg, docs, facts, items, training_index(docs))[0]
    assert len(rows) == 60
    coverage = audit_world("semantic", semantic, facts, items, {"oracle": rows})["strategies"]["oracle"]["coverage_by_split"]
    inferred = {s: c["coverage"] for s, c in coverage.items() if not s.endswith("rephrase")}  # rephrase: stated facts
    assert {s: c for s, c in inferred.items() if not s.startswith("val_")} == dict.fromkeys(
        ["category_holdout", "reversal", "syllogism"], 1.0), coverage
    assert 0 < min(c for s, c in inferred.items() if s.startswith("val_")) < 1
