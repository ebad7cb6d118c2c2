"""The claims table's logic on hand-made per-item outcomes: every verdict, pooling, "not run"."""

import math

import pytest

from pipeline.report.claims import (
    CHANCE,
    CLAIMS,
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_RUN,
    REPRODUCED,
    Claim,
    decide,
    selection_half,
    verdict,
)
from pipeline.stats import binomial_interval

ICL_GT_FT = Claim("ICL > FT on reversals", "ICL > FT", "icl", "ft", ("reversal",))


def split(world, name, correct, chance=0.5):
    return [{"item_id": f"{world}/{name}/{k}", "world": world, "split": name, "correct": float(c), "chance": chance}
            for k, c in enumerate(correct)]


def one_row(claim, outcomes):
    rows = decide(outcomes, (claim,))
    assert len(rows) == 1, rows
    return rows[0]


def test_verdict_reads_the_interval_against_the_band():
    assert verdict(0.01, 0.3, (0, math.inf)) == REPRODUCED
    assert verdict(-0.3, -0.01, (0, math.inf)) == CONTRADICTED
    assert verdict(-0.1, 0.2, (0, math.inf)) == INCONCLUSIVE
    assert verdict(-0.2, 0.0, (0, math.inf)) == INCONCLUSIVE  # touching 0 is not excluding it
    assert verdict(-0.05, 0.08, (-0.1, 0.1)) == REPRODUCED
    assert verdict(0.12, 0.3, (-0.1, 0.1)) == CONTRADICTED
    assert verdict(0.05, 0.3, (-0.1, 0.1)) == INCONCLUSIVE


def test_a_clear_win_in_the_papers_direction_is_reproduced():
    icl = split("reversals", "reversal", [1] * 20)
    ft = split("reversals", "reversal", [0] * 20)
    row = one_row(ICL_GT_FT, {"icl": icl, "ft": ft})
    assert row["verdict"] == REPRODUCED and row["world"] == "reversals" and row["splits"] == ["reversal"]
    assert (row["n"], row["a_acc"], row["b_acc"], row["diff"]) == (20, 1.0, 0.0, 1.0)
    assert row["lo"] == pytest.approx(2 * 0.025 ** (1 / 20) - 1) and row["p"] == 2 / 2**20


def test_a_clear_win_the_other_way_is_contradicted_and_a_small_one_inconclusive():
    icl = split("reversals", "reversal", [0] * 20)
    assert one_row(ICL_GT_FT, {"icl": icl, "ft": split("reversals", "reversal", [1] * 20)})["verdict"] == CONTRADICTED
    row = one_row(ICL_GT_FT, {"icl": icl, "ft": split("reversals", "reversal", [1] * 2 + [0] * 18)})
    assert row["verdict"] == INCONCLUSIVE and row["diff"] == pytest.approx(-0.1) and row["lo"] < 0 < row["hi"]


def test_a_missing_condition_or_split_gives_one_not_run_row_saying_why():
    row = one_row(ICL_GT_FT, {"icl": split("reversals", "reversal", [1])})
    assert (row["verdict"], row["note"], row["world"]) == (NOT_RUN, "no ft condition in this run", None)
    outcomes = {c: split("syllogisms", "syllogism", [1, 0]) for c in ("icl", "ft")}
    row = one_row(ICL_GT_FT, outcomes)
    assert (row["verdict"], row["note"]) == (NOT_RUN, "no reversal split in this run")
    sentence_split = next(c for c in CLAIMS if c.finding == "sentence splitting helps FT")
    assert one_row(sentence_split, outcomes)["verdict"] == NOT_RUN


def test_one_row_per_world_with_the_claims_splits_pooled():
    claim = Claim("aug vs icl", "aug ≥ icl", "ft+local+global", "icl")  # every split
    aug = split("reversals", "rephrase", [1] * 10) + split("reversals", "reversal", [1] * 10) + split("families", "reversal", [0] * 4)
    icl = split("reversals", "rephrase", [1] * 10) + split("reversals", "reversal", [0] * 10) + split("families", "reversal", [0] * 4)
    rows = decide({"ft+local+global": aug, "icl": icl}, (claim,))
    assert [(r["world"], r["splits"], r["n"]) for r in rows] == [("families", ["reversal"], 4),
                                                                 ("reversals", ["rephrase", "reversal"], 20)]
    assert rows[1]["diff"] == 0.5 and rows[1]["p"] == 2 / 2**10
    assert [r["verdict"] for r in rows] == [INCONCLUSIVE, REPRODUCED]


def test_validation_splits_never_decide_a_claim():
    icl = split("reversals", "reversal", [1] * 10) + split("reversals", "val_reversal", [0] * 10)
    ft = split("reversals", "reversal", [0] * 10) + split("reversals", "val_reversal", [1] * 10)
    row = one_row(Claim("pooled", "ICL > FT", "icl", "ft"), {"icl": icl, "ft": ft})
    assert (row["splits"], row["n"], row["verdict"]) == (["reversal"], 10, REPRODUCED)


def test_levels_against_chance_and_the_ceiling_use_the_exact_interval():
    near = Claim("base near chance", "base within 0.10 of chance", "base", CHANCE, band=(-0.1, 0.1))
    base = split("w", "reversal", [1, 0] * 200)  # 0.50 of 400, chance 0.50
    row = one_row(near, {"base": base})
    lo, hi = binomial_interval(200, 400)
    assert (row["diff"], row["b_acc"]) == (0.0, 0.5) and (row["lo"], row["hi"]) == (lo - 0.5, hi - 0.5)
    assert row["verdict"] == REPRODUCED
    assert one_row(near, {"base": split("w", "reversal", [1] * 40)})["verdict"] == CONTRADICTED
    assert one_row(near, {"base": split("w", "reversal", [1, 0] * 5)})["verdict"] == INCONCLUSIVE  # n = 10: too wide
    ceiling = Claim("oracle ceiling", "> 0.90", "ft+oracle", None, ("reversal",), (0.9, math.inf))
    row = one_row(ceiling, {"ft+oracle": split("w", "reversal", [1] * 100)})
    assert row["verdict"] == REPRODUCED and row["lo"] == pytest.approx(0.025 ** (1 / 100)) and row["b_acc"] is None
    assert one_row(ceiling, {"ft+oracle": split("w", "reversal", [1] * 5)})["verdict"] == INCONCLUSIVE
    assert one_row(ceiling, {"ft+oracle": split("w", "reversal", [1, 0] * 20)})["verdict"] == CONTRADICTED


def test_icl_beats_ft_is_decided_only_where_icl_beats_chance():
    claim = next(c for c in CLAIMS if c.where_icl_reasons)
    icl = split("families", "reversal", [1] * 20) + split("families", "composition", [1, 0] * 10)
    ft = split("families", "reversal", [0] * 20) + split("families", "composition", [0] * 20)
    row = one_row(claim, {"icl": icl, "ft": ft})
    assert (row["splits"], row["verdict"]) == (["reversal"], REPRODUCED)  # composition: ICL at chance
    decided = [o for o in icl if o["split"] == "reversal" and selection_half(o["item_id"]) == 1]
    assert 0 < row["n"] == len(decided) < 20  # decided on the half of the items it was not chosen on
    assert row["note"] == "splits chosen on the other half of their items"
    at_chance = split("families", "reversal", [1, 0] * 10)
    row = one_row(claim, {"icl": at_chance, "ft": ft[:20]})
    assert (row["verdict"], row["note"]) == (NOT_RUN, "ICL is above chance on no reversal/syllogism/composition/category_holdout split")


def test_the_items_that_chose_a_split_do_not_decide_it():
    """ICL right on exactly the selection half: the split is chosen, and the claim, decided on the
    other half where ICL is as wrong as FT, is not reproduced (choosing on all items would be)."""
    claim = next(c for c in CLAIMS if c.where_icl_reasons)
    ft = split("families", "reversal", [0] * 60)
    icl = [{**o, "correct": float(selection_half(o["item_id"]) == 0)} for o in ft]
    assert 10 < sum(o["correct"] for o in icl) < 50
    row = one_row(claim, {"icl": icl, "ft": ft})
    assert (row["splits"], row["a_acc"], row["b_acc"], row["verdict"]) == (["reversal"], 0.0, 0.0, INCONCLUSIVE)


def test_conditions_scored_on_different_items_are_an_error():
    icl = split("reversals", "reversal", [1, 1])
    ft = split("reversals", "reversal", [0, 0, 0])
    with pytest.raises(ValueError, match=r"only in B \['reversals/reversal/2'\]"):
        decide({"icl": icl, "ft": ft}, (ICL_GT_FT,))


def test_the_table_names_each_finding_of_the_paper_and_each_control():
    findings = [c.finding for c in CLAIMS if not c.check]
    assert findings == ["ICL > FT on reversals", "ICL > FT on syllogisms", "augmented FT vs ICL",
                        "local+global vs local alone", "local+global vs global alone", "sentence splitting helps FT"]
    assert [c.finding for c in CLAIMS if c.check] == [
        "base near chance", "FT learns its training data", "FT+oracle reaches the ceiling",
        "FT+oracle keeps its training data", "augmented FT > FT on reversal", "ICL > FT where ICL beats chance"]
