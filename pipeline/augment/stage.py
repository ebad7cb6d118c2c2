"""The `augment` stage: training docs -> augmented docs (local, global, oracle) and their audit.

Reads `<run>/data/{docs,items,facts}.parquet`; writes, under `<run>/augment/`:
    shards/<shard>.parquet  raw generations, one file per shard (resumable), and shards/plan.json
    augmented.parquet       Doc rows, origin augment:local | augment:global | augment:oracle
    audit.json              written last: per world and strategy, precision / contradiction
                            rate / coverage, and what was skipped, empty or dropped
Strategies are those the configured conditions need (`cfg.strategies()`). Local and global
prompts run on Ray Data over an actor pool of engines; the oracle and the audit are pure Python
on the driver, through the world modules (`world_module`).
"""

from __future__ import annotations

import logging

from pipeline.augment.audit import build_audit, format_audit
from pipeline.augment.generation import failed, generate_resumable, prepare_shard_dir, run_hf, work_left
from pipeline.augment.config import world_cap
from pipeline.augment.oracle import asked_rows, cap_per_world, oracle_docs
from pipeline.augment.plan import (
    LOCAL_PREFIX,
    fingerprint,
    make_shards,
    plan_global,
    plan_local,
)
from pipeline.augment.postprocess import dedupe_oracle, postprocess, training_index
from pipeline.augment.prompts import PromptFormat, example_sentences
from pipeline.config import RunConfig
from pipeline.logs import Progress
from pipeline.records import Doc, Fact, Item, read_records, write_json, write_records
from pipeline.runs import Run
from pipeline.worlds import is_validation

log = logging.getLogger(__name__)
NEEDS_RAY = True
#: What the augmentations depend on (see pipeline.fingerprint): the augment section, the seed, the
#: strategies the conditions need (not the conditions themselves) and the generator's weights.
CONFIG_KEYS = ("seed", "augment")
UPSTREAM = ("data",)


def derived_config(cfg: RunConfig) -> dict:
    return {"strategies": cfg.strategies()}


def model_refs(cfg: RunConfig) -> dict:
    return {"augment.generator": cfg.augment.generator} if {"local", "global"} & set(cfg.strategies()) else {}


def outputs(cfg: RunConfig) -> list[str]:
    return ["augment/augmented.parquet", "augment/audit.json"]


def clean(cfg: RunConfig, run: Run) -> None:
    """--force: drop the finished shards too, so every prompt is generated again."""
    from pipeline.storage import remove

    remove(run.path("augment", "shards"))


def world_module(name: str):
    """The world module (build / closure / parse / oracle) of a world, or None if it has none."""
    from pipeline import worlds

    registry = getattr(worlds, "WORLDS", None)
    if registry is None or name not in registry:
        return None
    return worlds.world_module(name)


def resolve_device(cfg: RunConfig) -> str:
    """auto: cuda if the cluster has GPUs now; cuda: wait for the autoscaler to add them (see
    `wait_for_gpus`), never falling back to CPU."""
    import ray

    from pipeline.ray_session import wait_for_gpus

    device = cfg.augment.device
    if device == "auto":
        return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    if device == "cuda":
        wait_for_gpus(cfg.augment.num_actors, "augment.device=cuda", cfg.ray.gpu_wait_s)
    return device


def generate(cfg: RunConfig, run: Run, train: list[dict], strategies: list[str],
             after_shard=None) -> tuple[list[dict], dict, dict]:
    """Plan local/global prompts, generate the missing shards, return (generations, skipped, info).
    `after_shard(n_written)` runs after each shard is written (fault injection for resume tests)."""
    from pipeline.models import context_window, load_tokenizer, resolve

    aug = cfg.augment
    fmt = PromptFormat(load_tokenizer(aug.generator))
    window = context_window(aug.generator)
    requests, prefixes, skipped = [], {}, {}
    if "local" in strategies:
        reqs, local_prefix, skips = plan_local(train, fmt, aug, window, cfg.seed)
        requests += reqs
        prefixes.update(local_prefix)
        skipped.update(skips)
    if "global" in strategies:
        reqs, global_prefixes, skips = plan_global(train, fmt, aug, window, cfg.seed)
        requests += reqs
        prefixes.update(global_prefixes)
        skipped.update(skips)
    shards = make_shards(requests, prefixes, aug.shard_size)
    settings = {"generator": aug.generator.model_dump(), "engine": aug.engine, "temperature": aug.temperature}
    shard_dir = run.path("augment", "shards")
    shard_dir.mkdir(parents=True, exist_ok=True)
    prepare_shard_dir(shard_dir, fingerprint(shards, settings))
    if aug.engine == "vllm":
        from pipeline.augment.vllm_engine import run_vllm
        from pipeline.ray_session import wait_for_gpus

        wait_for_gpus(aug.num_actors, "augment.engine=vllm", cfg.ray.gpu_wait_s)  # the engines need CUDA

        def results(todo):
            return run_vllm(todo, aug, str(resolve(aug.generator)), window)
    else:
        device = resolve_device(cfg)

        def results(todo):
            return run_hf(todo, aug, device)

    retried = work_left(shards, shard_dir)[2]  # rows that failed in an earlier run, generated again now
    if retried:
        log.info(f"retrying {retried} prompts that failed in an earlier run")
    with Progress(len(shards), "generating", unit="shards", logger=log) as bar:
        done = generate_resumable(shards, shard_dir, results, after_shard=after_shard, progress=bar)
    by_id = {row["request_id"]: row for rows in done.values() for row in rows}
    if set(by_id) != {r["request_id"] for r in requests} or sum(map(len, done.values())) != len(requests):
        raise RuntimeError(f"{shard_dir}: shards hold {sum(map(len, done.values()))} results for {len(requests)} planned prompts")
    generations = [{**r, **{k: by_id[r["request_id"]][k] for k in ("text", "status", "prompt_tokens", "new_tokens")}} for r in requests]
    errors = [g for g in generations if failed(g)]
    if errors:  # kept in their shards, so the next run generates only these again
        raise RuntimeError(f"{shard_dir}: {len(errors)} of {len(requests)} augmentation prompts failed "
                           f"(first: {errors[0]['request_id']}: {errors[0]['status'][:200]}); run the stage again to retry them")
    info = {
        "prompts": len(requests), "shards": len(shards), "context_window": window, "retried_prompts": retried,
        "prefix_groups": sum(k != LOCAL_PREFIX for k in prefixes),  # global prefixes encoded
        "new_tokens": sum(g["new_tokens"] for g in generations),
        # prompt + generated tokens per strategy
        "tokens_by_strategy": {s: sum(g["prompt_tokens"] + g["new_tokens"] for g in generations if g["strategy"] == s)
                               for s in strategies if s != "oracle"},
        # the tokens the model ran, each shared prefix once (the engines cache it): the report's augmentation FLOPs
        "computed_tokens_by_strategy": computed_tokens(generations, {k: fmt.count(p) for k, p in prefixes.items()}),
    }
    return generations, skipped, info


def computed_tokens(generations: list[dict], prefix_tokens: dict[str, int]) -> dict[str, int]:
    """Per strategy: its prompts' shared prefixes once each, then every prompt's own tokens and the
    tokens generated after it (an engine with several actors encodes a prefix once per actor: a
    few hundred tokens more, left out)."""
    out: dict[str, int] = {}
    for strategy in dict.fromkeys(g["strategy"] for g in generations):
        gens = [g for g in generations if g["strategy"] == strategy]
        out[strategy] = sum(prefix_tokens[k] for k in {g["prefix_key"] for g in gens}) + sum(
            g["prompt_tokens"] - prefix_tokens[g["prefix_key"]] + g["new_tokens"] for g in gens)
    return out


def build_oracle(cfg: RunConfig, train: list[dict], facts: list[dict], items: list[dict], index) -> tuple[list[dict], dict, list[str]]:
    """The oracle's documents (those not already training sentences, capped per world with the
    ones test items ask kept first, then those validation items ask), their counts per world, and
    the worlds that have no oracle. `index`: `training_index(train)`."""
    rows, without, asked, validation_asked = [], [], set(), set()
    for world in sorted({d["world"] for d in train}):
        module = world_module(world)
        if module is None or not hasattr(module, "oracle"):
            without.append(world)
            continue
        mine = [f for f in facts if f["world"] == world]
        made = oracle_docs(world, module, mine, [d for d in train if d["world"] == world])
        if world_cap(cfg.augment.oracle_max_per_world, world) is not None:
            theirs = [i for i in items if i["world"] == world]
            asked |= asked_rows(made, module, mine, [i for i in theirs if not is_validation(i["split"])])
            validation_asked |= asked_rows(made, module, mine, [i for i in theirs if is_validation(i["split"])])
        rows += made
    rows, counts = dedupe_oracle(rows, index)
    return cap_per_world(rows, cfg.augment.oracle_max_per_world, cfg.seed, asked, validation_asked), counts, without


def run(cfg: RunConfig, run: Run, *, after_shard=None) -> dict:
    """The stage; `after_shard` is passed to `generate` (fault injection for resume tests)."""
    run.require("data")
    docs = read_records(run.path("data", "docs.parquet"), Doc)
    items = read_records(run.path("data", "items.parquet"), Item)
    facts = read_records(run.path("data", "facts.parquet"), Fact)
    train = [d for d in docs if d["origin"] == "train"]
    strategies = cfg.strategies()
    worlds = sorted({d["world"] for d in train})
    modules = {w: world_module(w) for w in worlds}

    generations, skipped, info = [], {}, {"prompts": 0}
    if {"local", "global"} & set(strategies):
        generations, skipped, info = generate(cfg, run, train, strategies, after_shard=after_shard)
    index = training_index(train)
    rows, counts = postprocess(generations, index, example_sentences(), cfg.augment.min_words, cfg.augment.max_words)
    if "oracle" in strategies:
        oracle_rows, oracle_counts, without = build_oracle(cfg, train, facts, items, index)
        for world in without:
            skipped.setdefault(f"oracle/{world}", {})["no_oracle"] = 1
        rows += oracle_rows
        counts.update(oracle_counts)
    write_records(run.path("augment", "augmented.parquet"), Doc, rows)

    generation = {key: {**counts.get(key, {}), **skipped.get(key, {})} for key in sorted(set(counts) | set(skipped))}
    audit = build_audit(rows, items, facts, {w: m for w, m in modules.items() if m is not None}, strategies, generation)
    too_long = sum(v.get("too_long", 0) for v in skipped.values())
    audit["run"] = {"strategies": strategies, "generator": cfg.augment.generator.ref, "engine": cfg.augment.engine,
                    "skipped_too_long": too_long, **info}
    write_json(run.path("augment", "audit.json"), audit)
    log.info("%s", format_audit(audit))
    if too_long:
        log.warning(f"skipped {too_long} prompts longer than the context window (augment.strict=true makes this an error)")
    per_origin = {s: sum(r["origin"] == f"augment:{s}" for r in rows) for s in strategies}
    return {"rows": len(rows), "rows_by_strategy": per_origin, **info, "skipped_too_long": too_long}
