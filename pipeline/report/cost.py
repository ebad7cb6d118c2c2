"""The cost model: FLOPs of each condition, and when augmented FT becomes cheaper than ICL.

Conventions (Kaplan et al.): training costs 6 x params x tokens, inference 2 x params x tokens.
- training FLOPs of an FT condition: 6 P x tokens trained (all epochs);
- augmentation FLOPs: 2 P x (prompt + generated) tokens of the strategies the condition uses
  (the oracle derives sentences from the facts: no model FLOPs);
- per-query FLOPs: 2 P x (context + question) tokens; for ICL the context is the corpus.
Augmented FT pays up front and then per query less than ICL, so past
    Q* = (upfront_ft - upfront_icl) / (per_query_icl - per_query_ft)
queries it is cheaper; below Q* ICL is. Pure functions: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.conditions import FT_STRATEGIES


@dataclass
class CostInputs:
    params: int
    #: tokens processed by training, per FT condition (all epochs)
    train_tokens: dict[str, int] = field(default_factory=dict)
    #: prompt + generated tokens of each augmentation strategy (0 for the oracle)
    augment_tokens: dict[str, int] = field(default_factory=dict)
    #: mean tokens a query processes, per condition (ICL: corpus + question + choices)
    query_tokens: dict[str, float] = field(default_factory=dict)
    #: measured wall time of each stage, seconds
    stage_seconds: dict[str, float] = field(default_factory=dict)


def training_flops(params: int, tokens: int) -> float:
    return 6.0 * params * tokens


def inference_flops(params: int, tokens: float) -> float:
    return 2.0 * params * tokens


def break_even_queries(upfront_a: float, per_query_a: float, upfront_b: float, per_query_b: float) -> float | None:
    """Queries past which option a (more up-front, cheaper queries) costs less than option b.

    0 if a is never more expensive; None if a never catches up (its queries cost as much or more).
    """
    if upfront_a <= upfront_b and per_query_a <= per_query_b:
        return 0.0
    if per_query_a >= per_query_b:
        return None
    return (upfront_a - upfront_b) / (per_query_b - per_query_a)


def cost_rows(inputs: CostInputs, conditions: list[str]) -> list[dict]:
    """One row per condition: up-front and per-query FLOPs, and the break-even against ICL."""
    p = inputs.params
    rows = []
    for cond in conditions:
        strategies = FT_STRATEGIES.get(cond, ())
        train = training_flops(p, inputs.train_tokens.get(cond, 0)) if cond in FT_STRATEGIES else 0.0
        augment = sum(inference_flops(p, inputs.augment_tokens.get(s, 0)) for s in strategies)
        query = inference_flops(p, inputs.query_tokens.get(cond, 0.0))
        rows.append({
            "condition": cond,
            "train_flops": train,
            "augment_flops": augment,
            "upfront_flops": train + augment,
            "query_tokens": inputs.query_tokens.get(cond, 0.0),
            "per_query_flops": query,
        })
    icl = next((r for r in rows if r["condition"] == "icl"), None)
    for row in rows:
        row["break_even_vs_icl"] = (
            break_even_queries(row["upfront_flops"], row["per_query_flops"], icl["upfront_flops"], icl["per_query_flops"])
            if icl is not None and row["condition"] in FT_STRATEGIES else None
        )
    return rows


def format_flops(x: float) -> str:
    if x == 0:
        return "0"
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} FLOP"
