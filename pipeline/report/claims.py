"""The claims table: the paper's findings and this pipeline's controls, as data, decided per run.

A claim compares condition A with condition B on the same items (`pipeline.stats.paired_difference`),
or A's accuracy with chance or with a level (`pipeline.stats.binomial_interval`). A claim is
decided once per world, on that world's items of the claim's splits pooled (every split when the
claim names none; validation splits, which chose the recipe, never count). Its band is the open
interval (low, high) where the paper puts the quantity (A - B, A - chance, or A's accuracy); the
verdict reads the 95% interval against it:

- reproduced: the interval lies inside the band ("A > B": it excludes 0 on A's side);
- contradicted: the interval lies wholly beyond the band ("A > B": it excludes 0 on B's side);
- inconclusive: neither ("A > B": it includes 0);
- not run: the run lacks a condition or split the claim needs; the row says which.

"ICL > FT where ICL beats chance" picks its splits from the data, so it selects and decides on
disjoint halves of each split's items (by a hash of the item id): a split is chosen where ICL's
interval is above chance on the selection half, and the claim is decided on the other half only;
choosing and testing on the same items would favour ICL.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from pipeline.stats import binomial_interval, paired_difference
from pipeline.worlds import is_validation

REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "reproduced", "contradicted", "inconclusive", "not run"
CHANCE = "chance"
#: The paper's augmented FT: fine-tuning on the data plus both local and global augmentations.
AUGMENTED = "ft+local+global"
#: Splits that test generalization beyond the trained statements (rephrase tests memory).
GENERALIZATION = ("reversal", "syllogism", "composition", "category_holdout")
ABOVE = (0.0, math.inf)


@dataclass(frozen=True)
class Claim:
    finding: str  # the row's name
    paper: str  # what the paper (or, for a check, this pipeline) expects, in words
    a: str  # the condition measured
    b: str | None = None  # compared with: a condition, CHANCE, or None (A's accuracy against the band)
    splits: tuple[str, ...] = ()  # pooled per world; () = every split
    band: tuple[float, float] = ABOVE  # where the quantity must lie to reproduce the claim
    check: bool = False  # a control of this pipeline rather than a finding of the paper
    where_icl_reasons: bool = False  # only splits on which ICL is above chance (chosen on held-apart items)
    not_run: str | None = None  # why no run of this pipeline can test it


CLAIMS = (
    Claim("ICL > FT on reversals", "ICL > FT", "icl", "ft", ("reversal",)),
    Claim("ICL > FT on syllogisms", "ICL > FT", "icl", "ft", ("syllogism",)),
    Claim("augmented FT vs ICL", "augmented FT ≥ ICL", AUGMENTED, "icl"),
    Claim("local+global vs local alone", "ft+local+global > ft+local", AUGMENTED, "ft+local"),
    Claim("local+global vs global alone", "ft+local+global > ft+global", AUGMENTED, "ft+global"),
    Claim("sentence splitting helps FT", "FT on single sentences > FT on whole documents", "ft",
          not_run="no condition varies train.sentence_split: every FT condition trains with the run's one setting"),
    Claim("base near chance", "base within 0.10 of chance", "base", CHANCE, band=(-0.1, 0.1), check=True),
    Claim("FT learns its training data", "FT > 0.90 on rephrase", "ft", None, ("rephrase",), (0.9, math.inf), check=True),
    Claim("FT+oracle reaches the ceiling", "FT+oracle > 0.90 on reversal", "ft+oracle", None, ("reversal",),
          (0.9, math.inf), check=True),
    Claim("FT+oracle keeps its training data", "FT+oracle > 0.90 on rephrase", "ft+oracle", None, ("rephrase",),
          (0.9, math.inf), check=True),
    Claim("augmented FT > FT on reversal", "augmented FT > FT", AUGMENTED, "ft", ("reversal",), check=True),
    Claim("ICL > FT where ICL beats chance", "ICL > FT", "icl", "ft", GENERALIZATION, check=True, where_icl_reasons=True),
)


def verdict(lo: float, hi: float, band: tuple[float, float]) -> str:
    low, high = band
    if low < lo and hi < high:
        return REPRODUCED
    if hi < low or lo > high:
        return CONTRADICTED
    return INCONCLUSIVE


def decide(outcomes: dict[str, list[dict]], claims=CLAIMS, level: float = 0.95) -> list[dict]:
    """One row per claim and world (one "not run" row for a claim the run cannot test).

    `outcomes`: condition -> per-item outcomes (`pipeline.evaluate.results.outcomes`: item_id,
    world, split, correct, chance), every condition over the same items.
    """
    return [row for claim in claims for row in _claim_rows(claim, outcomes, level)]


def _claim_rows(claim: Claim, outcomes: dict[str, list[dict]], level: float) -> list[dict]:
    if claim.not_run:
        return [_row(claim, verdict=NOT_RUN, note=claim.not_run)]
    needed = [claim.a] + ([claim.b] if claim.b not in (None, CHANCE) else []) + (["icl"] if claim.where_icl_reasons else [])
    missing = [c for c in dict.fromkeys(needed) if c not in outcomes]
    if missing:
        return [_row(claim, verdict=NOT_RUN, note=f"no {' or '.join(missing)} condition in this run")]
    rows = []
    for world in sorted({o["world"] for o in outcomes[claim.a]}):
        splits = _splits(claim, world, outcomes, level)
        if splits:
            rows.append(_decide_world(claim, world, splits, outcomes, level))
    if not rows:
        named = "/".join(claim.splits)
        note = (f"ICL is above chance on no {named} split" if claim.where_icl_reasons else f"no {named} split in this run")
        rows.append(_row(claim, verdict=NOT_RUN, note=note))
    return rows


def _in(outcomes: list[dict], world: str, splits, half: int | None = None) -> list[dict]:
    """The world's outcomes on `splits`; `half` (0: selection, 1: decision) keeps that half of the items."""
    return [o for o in outcomes if o["world"] == world and o["split"] in splits and (half is None or selection_half(o["item_id"]) == half)]


def selection_half(item_id: str) -> int:
    """0 or 1, fixed per item id: which half of the items a data-chosen claim selects on (0) or decides on (1)."""
    return hashlib.sha256(item_id.encode()).digest()[0] & 1


def _splits(claim: Claim, world: str, outcomes: dict[str, list[dict]], level: float) -> list[str]:
    """The world's splits the claim is decided on, in sorted order."""
    present = sorted({o["split"] for o in outcomes[claim.a] if o["world"] == world and not is_validation(o["split"])})
    splits = [s for s in present if not claim.splits or s in claim.splits]
    if claim.where_icl_reasons:
        splits = [s for s in splits if _above_chance(_in(outcomes["icl"], world, (s,), half=0), level)]
    return splits


def _above_chance(group: list[dict], level: float) -> bool:
    if not group:
        return False
    lo, _ = binomial_interval(int(sum(o["correct"] for o in group)), len(group), level)
    return lo > sum(o["chance"] for o in group) / len(group)


def _decide_world(claim: Claim, world: str, splits: list[str], outcomes: dict[str, list[dict]], level: float) -> dict:
    half = 1 if claim.where_icl_reasons else None
    group = _in(outcomes[claim.a], world, splits, half)
    n = len(group)
    if n == 0:
        return _row(claim, world=world, splits=splits, verdict=NOT_RUN, note="no items left to decide on")
    a_acc = sum(o["correct"] for o in group) / n
    if claim.b in (None, CHANCE):  # A's accuracy, or A's accuracy minus the items' mean chance
        shift = sum(o["chance"] for o in group) / n if claim.b == CHANCE else 0.0
        lo, hi = binomial_interval(int(sum(o["correct"] for o in group)), n, level)
        diff, lo, hi, p = a_acc - shift, lo - shift, hi - shift, None
        b_acc = shift if claim.b == CHANCE else None
    else:
        other = _in(outcomes[claim.b], world, splits, half)
        pair = paired_difference({o["item_id"]: o["correct"] for o in group}, {o["item_id"]: o["correct"] for o in other}, level)
        diff, lo, hi, p = pair.diff, pair.lo, pair.hi, pair.p
        b_acc = sum(o["correct"] for o in other) / n
    note = "splits chosen on the other half of their items" if half else ""
    return _row(claim, world=world, splits=splits, n=n, a_acc=a_acc, b_acc=b_acc, diff=diff, lo=lo, hi=hi, p=p,
                verdict=verdict(lo, hi, claim.band), note=note)


def _row(claim: Claim, **fields) -> dict:
    row = {"finding": claim.finding, "paper": claim.paper, "check": claim.check, "a": claim.a, "b": claim.b,
           "world": None, "splits": [], "n": 0, "a_acc": None, "b_acc": None,
           "diff": None, "lo": None, "hi": None, "p": None, "note": ""}
    return {**row, **fields}
