"""Ray Data shell around the engines: shards of prompts -> generations, written shard by shard.

Each shard's results are written atomically to `<shard_dir>/<shard>.parquet` by the driver as
soon as all its requests are back; a re-run of the same plan (same `plan.json` fingerprint)
skips the shards already on disk, so a run killed part-way and re-run yields every request
exactly once. Rows an engine reported as failed (status "error: ...") are generated again on the
next run and their shard rewritten. A changed plan clears the old shards first.

HF engine: one Ray Data row per shard, `map_batches` over an actor pool of `ShardGenerator`s
(each loads the model once and keeps the global prefix's KV cache between shards).
vLLM engine: one row per request through ray.data.llm (see vllm_engine.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.augment.config import AugmentConfig
from pipeline.records import atomic_path, read_parquet, write_json
from pipeline.storage import AnyPath

RESULT_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("shard", pa.string()), ("text", pa.string()), ("status", pa.string()),
    ("prompt_tokens", pa.int64()), ("new_tokens", pa.int64()),
])


def generate_shard(engine, shard: dict, temperature: float) -> list[dict]:
    """Run one shard's requests through an engine (all after the shard's prefix, if it has one)."""
    reqs = shard["requests"]
    if not reqs:
        return []
    prompts = [r["prompt"] for r in reqs]
    kwargs = dict(n=1, max_new_tokens=reqs[0]["max_new_tokens"], temperature=temperature, seed=reqs[0]["seed"])
    if shard["prefix_key"]:
        gens = engine.generate_with_prefix(shard["prefix"], prompts, **kwargs)
    else:
        gens = engine.generate(prompts, **kwargs)
    if len(gens) != len(reqs):
        raise RuntimeError(f"shard {shard['shard']}: engine returned {len(gens)} results for {len(reqs)} prompts")
    out = []
    for r, (g,) in zip(reqs, gens):
        out.append({
            "request_id": r["request_id"], "shard": shard["shard"], "text": g.text,
            "status": "ok" if g.text.strip() else "empty", "prompt_tokens": g.prompt_tokens, "new_tokens": g.new_tokens,
        })
    return out


class ShardGenerator:
    """A Ray Data actor: loads the HF engine once; each input row is one whole shard."""

    def __init__(self, generator: dict, device: str, batch_size: int, threads: int, temperature: float):
        from pipeline.augment.engines import HFEngine
        from pipeline.section import ModelConfig

        self.engine = HFEngine(ModelConfig(**generator), device=device, batch_size=batch_size, threads=threads)
        self.temperature = temperature

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {name: [] for name in RESULT_SCHEMA.names}
        for payload in batch["payload"]:
            for row in generate_shard(self.engine, json.loads(str(payload)), self.temperature):
                for k in out:
                    out[k].append(row[k])
        return out


def run_hf(shards: list[dict], cfg: AugmentConfig, device: str) -> Iterator[dict]:
    import ray

    ds = ray.data.from_items([{"shard": s["shard"], "payload": json.dumps(s)} for s in shards],
                             override_num_blocks=len(shards))
    ds = ds.map_batches(
        ShardGenerator, batch_size=1, compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
        num_cpus=cfg.cpus_per_actor, num_gpus=1 if device == "cuda" else 0,
        fn_constructor_kwargs=dict(
            generator=cfg.generator.model_dump(), device=device, batch_size=cfg.batch_size,
            threads=max(1, int(cfg.cpus_per_actor)), temperature=cfg.temperature,
        ),
    )
    yield from ds.iter_rows()


# ---------------------------------------------------------------------- shard files


def shard_path(shard_dir: Path, shard: str) -> Path:
    return shard_dir / f"{shard}.parquet"


def prepare_shard_dir(shard_dir: Path, fingerprint: str) -> None:
    """Keep finished shards only if they were made by the same plan; otherwise start over."""
    plan = shard_dir / "plan.json"
    if plan.is_file() and json.loads(plan.read_text()).get("fingerprint") == fingerprint:
        return
    for old in shard_dir.glob("*.parquet"):
        old.unlink()
    write_json(plan, {"fingerprint": fingerprint})


def write_shard(shard_dir: Path, shard: str, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["request_id"]), schema=RESULT_SCHEMA)
    with atomic_path(shard_path(shard_dir, shard)) as tmp:
        pq.write_table(table, tmp)


def read_shard(shard_dir: AnyPath, shard: str) -> list[dict]:
    return read_parquet(shard_path(shard_dir, shard), schema=RESULT_SCHEMA).to_pylist()


def failed(row: dict) -> bool:
    """A result the engine reported as an error (vLLM records a failed row instead of stopping)."""
    return str(row["status"]).startswith("error")


def work_left(shards: list[dict], shard_dir: AnyPath) -> tuple[list[dict], dict[str, list[dict]], int]:
    """(shards to generate, kept rows of partly failed shards, requests to retry): a shard not on
    disk is generated whole; one with failed rows only for those rows."""
    todo, kept, retried = [], {}, 0
    for s in shards:
        if not shard_path(shard_dir, s["shard"]).is_file():
            todo.append(s)
            continue
        rows = read_shard(shard_dir, s["shard"])
        bad = {r["request_id"] for r in rows if failed(r)}
        if bad:
            kept[s["shard"]] = [r for r in rows if not failed(r)]
            todo.append({**s, "requests": [r for r in s["requests"] if r["request_id"] in bad]})
            retried += len(bad)
    return todo, kept, retried


def generate_resumable(
    shards: list[dict], shard_dir: Path, results: Callable[[list[dict]], Iterator[dict]],
    after_shard: Callable[[int], None] | None = None, progress=None,
) -> dict[str, list[dict]]:
    """shard -> its result rows, generating only the shards not on disk yet, and the failed rows
    (status "error: ...") of those that are (see `work_left`).

    `results(todo)` yields result rows of the todo shards in any order; a shard is written once
    all its requests are back. `after_shard(n_written)` runs after each write (fault injection
    for resume tests); `progress` (a `pipeline.logs.Progress`) is advanced per shard.
    """
    todo, kept, _ = work_left(shards, shard_dir)
    expected = {s["shard"]: {r["request_id"] for r in s["requests"]} for s in todo}
    if progress is not None:
        progress.update(len(shards) - len(todo))
    pending: dict[str, dict[str, dict]] = {s["shard"]: {} for s in todo}
    written = 0
    if todo:
        for row in results(todo):
            shard = str(row["shard"])
            if shard not in pending or row["request_id"] not in expected[shard]:
                raise RuntimeError(f"generation returned an unexpected request {row['request_id']!r} for shard {shard!r}")
            if row["request_id"] in pending[shard]:
                raise RuntimeError(f"generation returned request {row['request_id']!r} twice")
            pending[shard][row["request_id"]] = {
                "request_id": str(row["request_id"]), "shard": str(shard), "text": str(row["text"]),
                "status": str(row["status"]), "prompt_tokens": int(row["prompt_tokens"]), "new_tokens": int(row["new_tokens"]),
            }
            if len(pending[shard]) == len(expected[shard]):
                write_shard(shard_dir, shard, kept.pop(shard, []) + list(pending.pop(shard).values()))
                written += 1
                if progress is not None:
                    progress.update(1)
                if after_shard is not None:
                    after_shard(written)
    if pending:
        missing = sorted(pending)[:3]
        raise RuntimeError(f"generation ended with {len(pending)} shards incomplete, e.g. {missing}")
    return {s["shard"]: read_shard(shard_dir, s["shard"]) for s in shards}
