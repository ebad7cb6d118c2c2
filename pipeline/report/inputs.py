"""What the report reads from earlier stages: accuracy rows, per-item outcomes and the cost inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pipeline import models
from pipeline.conditions import GENERATOR_ICL
from pipeline.config import RunConfig
from pipeline.evaluate.results import outcomes
from pipeline.records import Item, Score, read_records
from pipeline.report.cost import CostInputs
from pipeline.runs import Run

ALL = "*"


def split_rows(results: dict) -> list[dict]:
    """results.json rows aggregated per (condition, world, split), with stderr 0 when undefined."""
    rows = []
    for r in results["rows"]:
        if r["subtask"] == ALL and r["split"] != ALL:
            se = r.get("acc_stderr")
            rows.append({**r, "stderr": 0.0 if se is None or math.isnan(se) else se})
    return rows


def item_outcomes(run: Run, conditions: list[str]) -> dict[str, list[dict]]:
    """Per condition, every test item's outcome (item_id, world, split, correct, chance), from the
    data stage's items and the evaluate stage's scores, by the rule results.json uses."""
    items = read_records(run.path("data", "items.parquet"), Item)
    return {c: outcomes(items, read_records(run.path("scores", f"{c}.parquet"), Score)) for c in conditions}


def parameter_count(folder: Path) -> int:
    """Parameters of a model folder, from the safetensors headers (no weights are loaded)."""
    from safetensors import safe_open

    total = 0
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors files to count parameters from")
    for f in files:
        with safe_open(f, framework="pt") as sf:
            for name in sf.keys():
                total += math.prod(sf.get_slice(name).get_shape())
    return total


def _stage_summary(run: Run, stage: str) -> dict:
    return run.manifest(stage) if run.is_done(stage) else {}


def trained_tokens(run: Run, condition: str) -> int:
    """Tokens a condition's training processed, as recorded in its exported model folder."""
    record = run.path("models", condition, "train_config.json")
    if not record.is_file():
        return 0
    return int(json.loads(record.read_text()).get("result", {}).get("tokens", 0))


def model_parameters(model) -> int:
    """Parameters of a ModelConfig's local folder; 0 for a hub id that is not a local folder."""
    src = models.resolve(model)
    return parameter_count(Path(src)) if not isinstance(src, str) else 0


def cost_inputs(cfg: RunConfig, run: Run) -> CostInputs:
    """Token counts and wall times recorded by the stages' manifests and results.json."""
    params = model_parameters(cfg.model)
    generator = model_parameters(cfg.augment.generator) if cfg.augment.generator.ref != cfg.model.ref else 0
    results = json.loads(run.path("results.json").read_text())
    evaluate = _stage_summary(run, "evaluate").get("summary", {})
    n_items = max(evaluate.get("items", 0), 1)
    timing = results.get("timing", {})
    prefixes = {"icl": results.get("icl", {}), GENERATOR_ICL: results.get("icl_generator", {})}
    items_per_world = {}
    for r in results["rows"]:
        if r["split"] == ALL and r["condition"] == results["conditions"][0]:
            items_per_world[r["world"]] = r["n"]
    query_tokens = {}
    for cond, t in timing.items():
        per_item = t["tokens"] / n_items
        if cond in prefixes:
            per_item += sum(prefixes[cond].get(w, {}).get("prefix_tokens", 0) * n for w, n in items_per_world.items()) / n_items
        query_tokens[cond] = per_item
    train_tokens = {c: trained_tokens(run, c) for c in cfg.ft_conditions()}
    augment = _stage_summary(run, "augment").get("summary", {})
    # the tokens the generator ran (runs before computed_tokens_by_strategy: every prompt's prefix again)
    computed = augment.get("computed_tokens_by_strategy", augment.get("tokens_by_strategy", {}))
    augment_tokens = {s: int(n) for s, n in computed.items()}
    seconds = {s: round(run.manifest(s)["seconds"], 1) for s in ("data", "augment", "train", "evaluate") if run.is_done(s)}
    return CostInputs(params=params, generator_params=generator, train_tokens=train_tokens, augment_tokens=augment_tokens,
                      query_tokens=query_tokens, stage_seconds=seconds,
                      train_runs=_stage_summary(run, "train").get("summary", {}), scoring=timing,
                      icl_prefix_tokens=sum(w.get("prefix_tokens", 0) for w in prefixes["icl"].values()),
                      generator_icl_prefix_tokens=sum(w.get("prefix_tokens", 0) for w in prefixes[GENERATOR_ICL].values()),
                      scoring_dtype=cfg.model.dtype, augment_dtype=cfg.augment.generator.dtype,
                      lora=cfg.train.lora is not None)
