"""The `evaluate` stage: score every test item under every condition, then summarize.

Reads data/items.parquet and data/docs.parquet; checks every item and every condition's model
folder (and builds the ICL contexts) before any scoring; scores each condition on a Ray Data
actor pool; writes scores/<condition>.parquet (Score rows, in item order) and results.json
(accuracies, see `results.py`), and prints a table.
"""

from __future__ import annotations

import logging

from pipeline.conditions import (
    GENERATOR_ICL,
    ICL_CONDITIONS,
    condition_names,
    condition_spec,
    context_window,
    load_condition_tokenizer,
)
from pipeline.config import RunConfig
from pipeline.evaluate.icl import icl_contexts
from pipeline.evaluate.results import build_results, format_table
from pipeline.evaluate.scorer import plan, pool_shape, score_on_ray
from pipeline.evaluate.scoring import encoded_tokens
from pipeline.logs import results_logger
from pipeline.records import (
    Doc,
    Item,
    Score,
    read_records,
    validate_rows,
    write_json,
    write_records,
)
from pipeline.runs import Run

log = logging.getLogger(__name__)
NEEDS_RAY = True
#: What the scores depend on (see pipeline.fingerprint): the evaluate section (extra checkpoints
#: included, by content), the seed, the model, the conditions scored, and the trained models.
CONFIG_KEYS = ("seed", "model", "evaluate")


def derived_config(cfg: RunConfig) -> dict:
    return {"conditions": condition_names(cfg)}


def upstream(cfg: RunConfig) -> tuple[str, ...]:
    return ("data", "train") if cfg.ft_conditions() else ("data",)


def input_files(cfg: RunConfig) -> list[str]:
    return list(cfg.evaluate.checkpoints.values())


def model_refs(cfg: RunConfig) -> dict:
    return {"model": cfg.model, **({"augment.generator": cfg.augment.generator} if GENERATOR_ICL in cfg.conditions else {})}


def outputs(cfg: RunConfig) -> list[str]:
    return [f"scores/{name}.parquet" for name in condition_names(cfg)] + ["results.json"]


def load_inputs(run: Run) -> tuple[list[dict], list[dict]]:
    """Items (every row checked: choices, answer index, prompt) and docs of the data stage."""
    items_path, docs_path = run.path("data", "items.parquet"), run.path("data", "docs.parquet")
    items = validate_rows(Item, read_records(items_path, Item), where=f"{items_path}: ")
    docs = validate_rows(Doc, read_records(docs_path, Doc), where=f"{docs_path}: ")
    if not items:
        raise ValueError(f"{items_path}: no items to evaluate")
    return items, docs


def run(cfg: RunConfig, run: Run) -> dict:
    import ray

    items, docs = load_inputs(run)
    names = condition_names(cfg)
    specs = {name: condition_spec(cfg, run, name) for name in names}  # folders checked up front
    contexts = {}  # per ICL condition, per world: each model's own rendering of the same documents
    for name in (n for n in ICL_CONDITIONS if n in specs):
        contexts[name] = icl_contexts(cfg, docs, items, load_condition_tokenizer(specs[name]), context_window(specs[name]))
        specs[name] = condition_spec(cfg, run, name, contexts[name])
    plans = {}
    for name, spec in specs.items():
        prefix_tokens = {w: c.num_tokens for w, c in contexts[name].items()} if name in contexts else None
        plans[name] = plan(items, load_condition_tokenizer(spec), cfg.evaluate.batch_size,
                           prefix_tokens=prefix_tokens, window=context_window(spec))

    if cfg.evaluate.use_gpu:  # a cluster that scales GPUs from zero: ask, wait, or fail; never CPU
        from pipeline.ray_session import wait_for_gpus

        wait_for_gpus(cfg.evaluate.num_actors or 1, "evaluate.use_gpu", cfg.ray.gpu_wait_s)
    resources = ray.cluster_resources()
    shape = pool_shape(cfg.evaluate, resources.get("CPU", 1), resources.get("GPU", 0))
    sequences = sum(len(p.requests) for p in plans.values())
    log.info(f"{len(names)} condition(s), {len(items)} items, {sequences} sequences on "
             f"{shape.actors} actor(s) x {shape.threads} thread(s)" + (" + 1 GPU" if shape.gpus_per_actor else ""))
    scores, seconds = score_on_ray(specs, items, plans, shape)
    timing = {
        name: {"scoring_seconds": round(seconds[name], 3), "sequences": len(p.requests),
               "tokens": encoded_tokens(p.requests)}
        for name, p in plans.items()
    }

    for name, rows in scores.items():
        write_records(run.path("scores", f"{name}.parquet"), Score, [{**r, "condition": name} for r in rows])
    icl = {name: {w: {"num_docs": c.num_docs, "total_docs": c.total_docs, "prefix_tokens": c.num_tokens,
                      "chat_template": c.chat_template} for w, c in by_world.items()}
           for name, by_world in contexts.items()}
    results = build_results(items, scores, margin=cfg.evaluate.contamination_margin, z=cfg.evaluate.contamination_z,
                            extra={"icl": icl.get("icl", {}), "icl_generator": icl.get(GENERATOR_ICL, {}), "timing": timing})
    write_json(run.path("results.json"), results)
    results_logger("evaluate").info("accuracy (± standard error) per world and split:\n%s", format_table(results))
    overall: dict[str, dict[str, float]] = {}
    for r in results["rows"]:
        if r["split"] == "*":
            overall.setdefault(r["condition"], {})[r["world"]] = round(r["acc"], 4)
    return {"items": len(items), "conditions": names, "acc": overall,
            "contaminated": len(results["contamination"]["flagged"]), "timing": timing}
