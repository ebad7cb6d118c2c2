"""The cost model: FLOPs of each condition, and when augmented FT becomes cheaper than ICL.

Conventions (Kaplan et al.): training costs 6 x params x tokens, inference 2 x params x tokens.
- training FLOPs of an FT condition: 6 P x tokens trained (all epochs); with LoRA 4 P x tokens
  (the forward pass and the activations' gradients; the frozen weights get no gradient, the
  adapters' own are negligible);
- augmentation FLOPs: 2 P_gen x the tokens the generator ran for the strategies the condition
  uses (each shared prompt prefix once, then every prompt's own and generated tokens), P_gen the
  generator's parameters (the oracle derives sentences from the facts: no model FLOPs);
- per-query FLOPs: 2 P x (context + question) tokens; for ICL the context is the corpus (for
  `icl-generator`, the generator's P and its own tokens).
Augmented FT pays up front and then per query less than ICL, so past
    Q* = (upfront_ft - upfront_icl) / (per_query_icl - per_query_ft)
queries it is cheaper; below Q* ICL is.

Roofline: each stage's achieved FLOP/s is its cost-model FLOPs over its measured time, and its
fraction of roof that over the machine's cached matmul FLOP/s in the dtype it computed in
(`pipeline.roofline`; the caller passes the lookup, so nothing here measures or reads a file).
Pure functions: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.conditions import FT_STRATEGIES, GENERATOR_ICL
from pipeline.roofline import MEASURE_COMMAND


@dataclass
class CostInputs:
    params: int
    #: parameters of augment.generator where another model writes the augmentations (0: the model under study)
    generator_params: int = 0
    #: tokens processed by training, per FT condition (all epochs)
    train_tokens: dict[str, int] = field(default_factory=dict)
    #: tokens the generator ran per augmentation strategy: shared prefixes once, prompts' own and generated tokens
    augment_tokens: dict[str, int] = field(default_factory=dict)
    #: mean tokens a query processes, per condition (ICL: corpus + question + choices)
    query_tokens: dict[str, float] = field(default_factory=dict)
    #: measured wall time of each stage, seconds
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: the train manifest's summary: per FT condition tokens, train_seconds, bf16 (skipped fits have none)
    train_runs: dict[str, dict] = field(default_factory=dict)
    #: results.json timing: per condition the tokens scored and the scoring seconds
    scoring: dict[str, dict] = field(default_factory=dict)
    #: ICL prefix tokens, all worlds together (each prefix is encoded once, inside the scoring time)
    icl_prefix_tokens: int = 0
    #: the same for `icl-generator`, in the generator's tokens
    generator_icl_prefix_tokens: int = 0
    #: dtype of the weights used for scoring and for generation (model.dtype, augment.generator.dtype)
    scoring_dtype: str = "float32"
    augment_dtype: str = "float32"
    #: whether training updates LoRA adapters only (train.lora)
    lora: bool = False


def generator_params(inputs: CostInputs) -> int:
    return inputs.generator_params or inputs.params


def _scorer(inputs: CostInputs, cond: str) -> tuple[int, int, str]:
    """(parameters, prefix tokens encoded once, weights dtype) of the model that scores `cond`."""
    if cond == GENERATOR_ICL:
        return generator_params(inputs), inputs.generator_icl_prefix_tokens, inputs.augment_dtype
    return inputs.params, inputs.icl_prefix_tokens if cond == "icl" else 0, inputs.scoring_dtype


def training_flops(params: int, tokens: int, lora: bool = False) -> float:
    return (4.0 if lora else 6.0) * params * tokens


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
        train = training_flops(p, inputs.train_tokens.get(cond, 0), inputs.lora) if cond in FT_STRATEGIES else 0.0
        augment = sum(inference_flops(generator_params(inputs), inputs.augment_tokens.get(s, 0)) for s in strategies)
        query = inference_flops(_scorer(inputs, cond)[0], inputs.query_tokens.get(cond, 0.0))
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


def short_dtype(dtype: str) -> str:
    """float32 / bfloat16 (config names) -> fp32 / bf16 (roofline names)."""
    return {"float32": "fp32", "bfloat16": "bf16"}.get(dtype, dtype)


def stage_work(inputs: CostInputs) -> list[dict]:
    """Per measured stage: its cost-model FLOPs, measured seconds and compute dtype.

    Training: 6 P (LoRA: 4 P) x trained tokens over the training loop's time (setup and export apart), per
    fit. Scoring: 2 P x scored tokens (plus the ICL prefix, encoded once) over the scorers' time,
    per condition. Augmentation: 2 P_gen x the tokens it ran over the stage's wall time
    (which includes starting the actors and loading the model)."""
    p = inputs.params
    out = []
    for cond, r in inputs.train_runs.items():
        if r.get("tokens") and r.get("train_seconds") and not r.get("same_fit_as"):  # a shared fit once
            out.append({"stage": f"train {cond}", "flops": training_flops(p, r["tokens"], inputs.lora),
                        "seconds": float(r["train_seconds"]), "dtype": "bf16" if r.get("bf16") else "fp32"})
    for cond, t in inputs.scoring.items():
        params, prefix, dtype = _scorer(inputs, cond)
        tokens = t.get("tokens", 0) + prefix
        if tokens and t.get("scoring_seconds"):
            out.append({"stage": f"evaluate {cond}", "flops": inference_flops(params, tokens),
                        "seconds": float(t["scoring_seconds"]), "dtype": short_dtype(dtype)})
    generated = sum(inputs.augment_tokens.values())
    if generated and inputs.stage_seconds.get("augment"):
        out.append({"stage": "augment (stage wall time)", "flops": inference_flops(generator_params(inputs), generated),
                    "seconds": float(inputs.stage_seconds["augment"]), "dtype": short_dtype(inputs.augment_dtype)})
    return out


def roofline_rows(inputs: CostInputs, roof_for) -> list[dict]:
    """`stage_work` with achieved FLOP/s and the fraction of roof; `roof_for(dtype)` returns the
    cached roof's FLOP/s for a dtype, or None where it was never measured."""
    rows = []
    for w in stage_work(inputs):
        achieved = w["flops"] / w["seconds"]
        roof = roof_for(w["dtype"])
        rows.append({**w, "achieved_flops_per_s": achieved, "roof_flops_per_s": roof,
                     "fraction_of_roof": achieved / roof if roof else None})
    return rows


def roofline_lines(rows: list[dict]) -> list[str]:
    """The report's roofline table (empty without measured stages)."""
    if not rows:
        return []
    out = ["", "Achieved FLOP/s = the cost model's FLOPs over the measured time; fraction of roof = that over "
           "the matmul FLOP/s measured on the machine that wrote this report, in the stage's dtype (the right "
           "roof when the run ran on this machine; on a cluster, the workers' own roof applies).", "",
           "| stage | dtype | FLOPs | seconds | achieved | roof | fraction of roof |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        roof, share = r["roof_flops_per_s"], r["fraction_of_roof"]
        out.append(f"| {r['stage']} | {r['dtype']} | {format_flops(r['flops'])} | {r['seconds']:.1f} | "
                   f"{format_flops(r['achieved_flops_per_s'])}/s | {format_flops(roof) + '/s' if roof else '—'} | "
                   f"{'—' if share is None else f'{share:.0%}' if share >= 0.01 else f'{share:.2%}'} |")
    if any(r["roof_flops_per_s"] is None for r in rows):
        out += ["", f"Roof not measured on this machine for every dtype: `{MEASURE_COMMAND}` measures it once (seconds) and caches it."]
    return out
