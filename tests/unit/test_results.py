"""results.json: accuracies, standard errors, chance, aggregates, the contamination flag, the table."""

import math

import pytest

from pipeline.evaluate.results import ALL, build_results, contamination_threshold, format_table
from pipeline.stats import stderr


def item(i, world="w", split="reversal", subtask="danger", n_choices=2, answer=0):
    return {"item_id": f"{world}-{split}-{i}", "world": world, "split": split, "subtask": subtask,
            "prompt": "p", "choices": [f"c{j}" for j in range(n_choices)], "answer_index": answer}


def score(it, pick, chars=None):
    lps = [-5.0] * len(it["choices"])
    lps[pick] = -1.0
    return {"item_id": it["item_id"], "choice_logprobs": lps, "choice_num_tokens": [1] * len(lps),
            "choice_num_chars": chars or [2] * len(lps)}


def find(results, **key):
    rows = [r for r in results["rows"] if all(r[k] == v for k, v in key.items())]
    assert len(rows) == 1, rows
    return rows[0]


def test_stderr_is_the_sample_standard_error():
    assert stderr([1, 0, 1, 1]) == pytest.approx(math.sqrt(0.75 * 0.25 * 4 / 3 / 4))
    assert stderr([1.0]) is None
    assert stderr([1, 1, 1]) == 0


def test_rows_per_subtask_split_and_world_with_chance():
    items = [item(i, subtask="danger") for i in range(4)] + [item(i + 4, subtask="size", n_choices=4) for i in range(4)]
    items += [item(i, split="syllogism", subtask="all-are", n_choices=6) for i in range(2)]
    picks = [0, 0, 0, 1, 0, 1, 2, 3, 0, 5]  # danger 3/4, size 1/4, syllogism 1/2
    results = build_results(items, {"ft": [score(it, p) for it, p in zip(items, picks)]})
    assert results["schema_version"] == 1 and results["conditions"] == ["ft"]
    danger = find(results, split="reversal", subtask="danger")
    assert (danger["n"], danger["acc"], danger["chance"]) == (4, 0.75, 0.5)
    assert danger["acc_stderr"] == pytest.approx(stderr([1, 1, 1, 0]))
    size = find(results, subtask="size")
    assert (size["acc"], size["chance"]) == (0.25, 0.25)
    reversal = find(results, split="reversal", subtask=ALL)
    assert (reversal["n"], reversal["acc"], reversal["chance"]) == (8, 0.5, pytest.approx(0.375))
    world = find(results, world="w", split=ALL)
    assert (world["n"], world["acc"]) == (10, 0.5)
    assert world["chance"] == pytest.approx((4 * 0.5 + 4 * 0.25 + 2 / 6) / 10)
    assert all(r["contaminated"] is None for r in results["rows"])  # only base is checked


def test_acc_norm_uses_characters():
    it = item(0)
    s = {"item_id": it["item_id"], "choice_logprobs": [-4.0, -6.0], "choice_num_tokens": [1, 3], "choice_num_chars": [2, 12]}
    row = find(build_results([it], {"icl": [s]}), split=ALL)
    assert (row["acc"], row["acc_norm"]) == (1.0, 0.0)


def test_base_far_above_chance_is_flagged_and_near_chance_is_not():
    clean = [item(i, world="clean") for i in range(40)]
    leaky = [item(i, world="leaky") for i in range(40)]
    picks = {**{it["item_id"]: i % 2 for i, it in enumerate(clean)},  # 50 %
             **{it["item_id"]: 0 if i < 36 else 1 for i, it in enumerate(leaky)}}  # 90 %
    results = build_results(clean + leaky, {"base": [score(it, picks[it["item_id"]]) for it in clean + leaky]})
    assert find(results, world="leaky", split=ALL)["contaminated"] is True
    assert find(results, world="clean", split=ALL)["contaminated"] is False
    flagged = {(f["world"], f["split"], f["subtask"]) for f in results["contamination"]["flagged"]}
    assert ("leaky", ALL, ALL) in flagged and not any(w == "clean" for w, _, _ in flagged)
    table = format_table(results)
    assert "0.90±0.05!" in table and "possible contamination" in table


def test_contamination_threshold_needs_both_margin_and_significance():
    assert contamination_threshold(0.5, 10_000, 0.1, 3) == pytest.approx(0.6)  # margin dominates
    assert contamination_threshold(0.5, 4, 0.1, 3) == pytest.approx(0.5 + 3 * 0.25)  # noise dominates


def test_missing_score_is_an_error_naming_the_item():
    items = [item(0), item(1)]
    with pytest.raises(ValueError, match="item 'w-reversal-1' has no score"):
        build_results(items, {"ft": [score(items[0], 0)]})


def test_table_has_one_line_per_world_and_split_and_a_column_per_condition():
    items = [item(i) for i in range(3)] + [item(i, split="syllogism") for i in range(3)]
    results = build_results(items, {"base": [score(it, 1) for it in items], "icl": [score(it, 0) for it in items]})
    lines = format_table(results).splitlines()
    assert lines[0].split() == ["world", "split", "n", "chance", "base", "icl"]
    body = [line.split() for line in lines[2:]]
    assert [b[:3] for b in body] == [["w", "all", "6"], ["w", "reversal", "3"], ["w", "syllogism", "3"]]
    assert body[0][4:] == ["0.00±0.00", "1.00±0.00"]


def test_a_worlds_aggregate_leaves_its_validation_splits_out():
    from pipeline.evaluate.results import build_results

    items = [{"item_id": f"{split}{i}", "world": "w", "split": split, "subtask": "s", "prompt": "q",
              "choices": [" a", " b"], "answer_index": 0, "support_fact_ids": []}
             for split in ("reversal", "val_reversal") for i in range(2)]
    right, wrong = [-1.0, -2.0], [-2.0, -1.0]
    scores = {"ft": [{"item_id": it["item_id"], "choice_logprobs": right if it["split"] == "reversal" else wrong,
                      "choice_num_tokens": [1, 1], "choice_num_chars": [2, 2]} for it in items]}
    rows = {(r["split"], r["subtask"]): r for r in build_results(items, scores)["rows"]}
    assert rows[("*", "*")]["n"] == 2 and rows[("*", "*")]["acc"] == 1.0  # the test split alone
    assert rows[("val_reversal", "*")]["acc"] == 0.0  # still reported on its own
