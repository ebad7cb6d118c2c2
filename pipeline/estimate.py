"""How long the rest of a run should take on this machine: a rough estimate, logged after `data`.

Once the data stage has written the documents, `pipeline run` logs an estimate of augment,
train and evaluate. Each stage's work is planned with the stages' own functions: the prompts
augment will generate (at most their `max_new_tokens` each), every fit's step plan (its oracle
documents exactly, local and global augmentations at their caps), and the tokens each condition
scores. Work becomes time through this machine's matmul roof in the dtype the stage computes in
(`pipeline.roofline`: measured once per machine and cached, about 3 s the first time) times the
share of that roof the stage reached in measured runs (`SHARE`, `TRAIN_MATMUL_SHARE`), plus a
cost per trained weight and optimizer step (`PARAM_STEP_S`) and fixed costs per stage and per
fit (`FIXED_S`). docs/results.md compares estimate and measurement.

Only for a run on one machine (a local Ray cluster); on a cluster the work runs elsewhere.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

#: Share of the matmul roof reached at the demo's shapes, per (stage, dtype): scoring (2 x params
#: x the data summary's split tokens, per condition) and generation (2 x params x (prompt tokens +
#: batch x new tokens)). Measured on 2-core machines: docs/results.md, "The run-time estimate".
#: Where a dtype was not measured for a stage, the stage is estimated at its fp32 rate.
SHARE = {("evaluate", "fp32"): 0.4, ("augment", "fp32"): 0.58}
#: Generation has a second part: per decoding step of a generate() call, a cost that does not grow
#: with the model (Python, the per-layer kernel launches, the cache's bookkeeping); it dominates a
#: small model's generation. Fitted with the share above to two measured augment stages: the
#: 135M demo's and the 1.5B's on the reversals world (docs/results.md).
DECODE_STEP_S = 0.12
#: Training has two parts, both fitted to measured fits (docs/results.md): its matrix products (6 x
#: params x tokens, 4 x for LoRA) at this share of the roof in the training dtype, and per
#: optimizer step a cost per trained weight that a faster matmul unit does not shorten (the
#: optimizer's update, zeroing and clipping gradients, bf16 casts, element-wise work, the Ray
#: worker's share of the cores). A LoRA fit trains under 1% of the weights, so its second part is
#: left out. One share of the roof for the whole step, fitted to a full fine-tuning in bf16 on
#: AMX, made a bf16 LoRA fit without AMX 15x too slow.
TRAIN_MATMUL_SHARE = 0.5
PARAM_STEP_S = {"fp32": 3e-9, "bf16": 6e-9}
#: Seconds each stage spends outside its matrix products (actors, model loads), and per fit (Ray
#: Train's start, DeepSpeed's engine, export).
FIXED_S = {"augment": 20.0, "evaluate": 5.0, "fit": 25.0}


def rate(stage: str, dtype: str, roof_flops: dict[str, float]) -> float:
    """FLOP/s a stage's matrix products are expected to reach in `dtype` here (for evaluate and
    augment, their fp32 rate where `dtype` is unmeasured)."""
    if stage == "train":
        return roof_flops[dtype] * TRAIN_MATMUL_SHARE
    key = (stage, dtype) if (stage, dtype) in SHARE else (stage, "fp32")
    return roof_flops[key[1]] * SHARE[key]


@dataclass
class Work:
    params: int
    #: parameters of augment.generator (which writes the augmentations and scores `icl-generator`)
    generator_params: int = 0
    #: per generate() call: (prompt tokens of its prompts, max new tokens, prompts)
    generate_batches: list[tuple[int, int, int]] = field(default_factory=list)
    #: per fit: (optimizer steps, padded tokens over all steps); conditions with identical
    #: examples share one fit, as in the train stage, under the first condition's name
    fits: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: tokens scored over every condition of the model under study (each ICL prefix once per world)
    scored_tokens: int = 0
    #: tokens `icl-generator` scores with the generator
    generator_scored_tokens: int = 0
    #: training updates LoRA adapters only (train.lora): 4 P, not 6 P, per token
    lora: bool = False


def seconds(work: Work, roof_flops: dict[str, float], train_dtype: str, score_dtype: str, gen_dtype: str) -> dict[str, float]:
    """Estimated seconds per stage. `roof_flops`: this machine's roof per dtype ("fp32", "bf16");
    fp32 is always needed."""
    from pipeline.report.cost import inference_flops, training_flops

    p, gen = work.params, work.generator_params or work.params
    out: dict[str, float] = {}
    if work.generate_batches:
        flops = sum(inference_flops(gen, prompt + new * batch) for prompt, new, batch in work.generate_batches)
        steps = sum(new for _, new, _ in work.generate_batches)
        out["augment"] = FIXED_S["augment"] + flops / rate("augment", gen_dtype, roof_flops) + steps * DECODE_STEP_S
    if work.fits:
        steps = sum(s for s, _ in work.fits.values())
        tokens = sum(t for _, t in work.fits.values())
        per_weight = 0.0 if work.lora else steps * p * PARAM_STEP_S[train_dtype]
        out["train"] = (FIXED_S["fit"] * len(work.fits) + per_weight
                        + training_flops(p, tokens, work.lora) / rate("train", train_dtype, roof_flops))
    if work.scored_tokens or work.generator_scored_tokens:
        out["evaluate"] = (FIXED_S["evaluate"] + inference_flops(p, work.scored_tokens) / rate("evaluate", score_dtype, roof_flops)
                           + inference_flops(gen, work.generator_scored_tokens) / rate("evaluate", gen_dtype, roof_flops))
    return out


def plan_work(cfg, run, reuse: bool = False) -> Work:
    """The work of augment, train and evaluate, planned from the data stage's outputs. `reuse`:
    the augment stage's outputs are current and the run is not forced, so the fits are planned on
    the real augmentations, and those whose model folders the train stage will reuse are left out."""
    from pipeline.augment.plan import plan_global, plan_local
    from pipeline.augment.postprocess import training_index
    from pipeline.augment.prompts import PromptFormat
    from pipeline.augment.stage import build_oracle
    from pipeline.conditions import FT_STRATEGIES, GENERATOR_ICL
    from pipeline.models import context_window, load_tokenizer, local_model_folder
    from pipeline.records import Doc, Fact, Item, read_records
    from pipeline.report.inputs import parameter_count
    from pipeline.train.stage import augmented_docs, prepare, reusable, training_record

    docs = read_records(run.path("data", "docs.parquet"), Doc)
    facts = read_records(run.path("data", "facts.parquet"), Fact)
    train = [d for d in docs if d["origin"] == "train"]
    aug = cfg.augment
    strategies = cfg.strategies()
    generator = bool({"local", "global"} & set(strategies)) or GENERATOR_ICL in cfg.conditions
    work = Work(params=parameter_count(local_model_folder(cfg.model)), lora=cfg.train.lora is not None,
                generator_params=parameter_count(local_model_folder(aug.generator)) if generator else 0)
    extra: list[dict] = []
    if reuse:
        extra = augmented_docs(cfg, run)
    elif {"local", "global"} & set(strategies):
        fmt = PromptFormat(load_tokenizer(aug.generator))
        window = context_window(aug.generator)
        for strategy, planner in (("local", plan_local), ("global", plan_global)):
            if strategy not in strategies:
                continue
            requests, prefixes, _ = planner(train, fmt, aug, window, cfg.seed)
            if not requests:
                continue
            prompt_tokens = sum(fmt.count(p) for p in prefixes.values()) + sum(fmt.count(r["prompt"], first=False) for r in requests)
            for i in range(0, len(requests), aug.batch_size):
                chunk = requests[i:i + aug.batch_size]
                work.generate_batches.append((prompt_tokens * len(chunk) // len(requests), chunk[0]["max_new_tokens"], len(chunk)))
            # what local and global can add to training, at their caps: every line of every output
            lines = 2 if strategy == "local" else max(1, requests[0]["max_new_tokens"] // 16)
            extra += [{"doc_id": f"{r['request_id']}/{k}", "world": r["world"], "origin": f"augment:{strategy}",
                       "text": " ".join(["word"] * (r["max_new_tokens"] // lines))}
                      for r in requests for k in range(lines)]
    if "oracle" in strategies and not reuse:
        items = read_records(run.path("data", "items.parquet"), Item)
        extra += build_oracle(cfg, train, facts, items, training_index(train))[0]
    tokenizer = load_tokenizer(cfg.model)
    window = context_window(cfg.model)
    fingerprints = set()
    for condition in cfg.ft_conditions():
        needs = set(FT_STRATEGIES[condition])
        prepared = prepare(condition, cfg, train, [d for d in extra if d["origin"].removeprefix("augment:") in needs],
                           tokenizer, window)
        if reuse and reusable(run.path("models", condition), training_record(cfg, prepared, local_model_folder(cfg.model))):
            continue
        if prepared.fingerprint not in fingerprints:
            fingerprints.add(prepared.fingerprint)
            work.fits[condition] = (prepared.steps, sum(len(r["input_ids"]) for r in prepared.rows))
    summary = run.manifest("data")["summary"]["worlds"]
    split_tokens = sum(s["tokens"] for w in summary.values() for s in w["splits"].values())
    corpus_tokens = sum(w["tokens"] for w in summary.values())
    own = [c for c in cfg.conditions if c != GENERATOR_ICL]
    work.scored_tokens = split_tokens * len(own) + (corpus_tokens if "icl" in own else 0)
    if GENERATOR_ICL in cfg.conditions:  # counted in the model's tokens: close enough for an estimate
        work.generator_scored_tokens = split_tokens + corpus_tokens
    return work


def estimate_line(cfg, run, stages: list[str], reuse: bool = False) -> str | None:
    """The log line for those of `stages` that have work: per stage and in total; None where
    there is nothing to estimate. `reuse`: as `plan_work`'s."""
    from pipeline.report.cost import short_dtype
    from pipeline.roofline import roof
    from pipeline.train.engine import use_bf16

    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return None  # a cluster: the work runs on other machines
    work = plan_work(cfg, run, reuse)
    threads = os.cpu_count() or 1
    train_dtype = "bf16" if use_bf16(cfg.train) else "fp32"
    dtypes = {"fp32", train_dtype, short_dtype(cfg.model.dtype), short_dtype(cfg.augment.generator.dtype)}
    roofs = {d: roof(d, threads).flops_per_s for d in dtypes}
    est = seconds(work, roofs, train_dtype, short_dtype(cfg.model.dtype), short_dtype(cfg.augment.generator.dtype))
    est = {stage: s for stage, s in est.items() if stage in stages}
    if not est:
        return None
    steps = sum(s for s, _ in work.fits.values())
    fits = f"{len(work.fits)} fit{'s' if len(work.fits) != 1 else ''}"
    parts = [f"{stage} {_minutes(s)}" + (f" ({fits}, {steps} steps, {train_dtype})" if stage == "train" else "")
             for stage, s in est.items()]
    return f"estimate for this machine: about {_minutes(sum(est.values()))} ({'; '.join(parts)}); rough: from the matmul roof"


def _minutes(s: float) -> str:
    return f"{math.ceil(s)} s" if s < 60 else f"{math.ceil(s / 60)} min"
