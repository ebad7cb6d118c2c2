"""Scorer actors: one condition's model (and ICL prefixes) scoring planned forward batches.

The driver tokenizes every item and plans each condition's forward batches (`plan`; batches
never mix worlds when a world's ICL prefix is read first). The same `ConditionScorer` then scores
all conditions' batches in this process (`score_local`) or on one Ray Data actor pool
(`score_on_ray`; started once, not once per condition): CPU actors get `threads` torch threads
each and fit the cluster's CPUs, GPU actors one GPU each. A prefix is encoded once per actor, on
first use. Because the plan fixes every batch's contents and shape, any split of the batches
over actors gives the same numbers as one process with the same torch thread count (other
thread counts differ only by float rounding, about 1e-6).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import pyarrow as pa

from pipeline.conditions import ConditionSpec, load_condition_model
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.scoring import (
    Prefix,
    Request,
    check_window,
    collect,
    encode_prefix,
    item_requests,
    pad_id,
    plan_batches,
    score_batch,
)
from pipeline.logs import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """Every (item, choice) request, and one dataset row per forward batch."""

    requests: list[Request]
    rows: list[dict]  # world; per request: its index, item, choice, context and continuation ids


@dataclass(frozen=True)
class PoolShape:
    actors: int
    threads: int
    gpus_per_actor: int


def plan(items: list[dict], tokenizer, batch_size: int, *, prefix_tokens: dict[str, int] | None, window: int) -> Plan:
    """Tokenize items and group their requests into forward batches; `prefix_tokens` (world ->
    ICL prefix length) keeps each batch within one world. Sequences must fit `window`."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item["world"] if prefix_tokens is not None else "", []).append(i)
    requests: list[Request] = []
    rows: list[dict] = []
    for world, indices in groups.items():
        local = item_requests(tokenizer, [items[i] for i in indices], after_prefix=prefix_tokens is not None)
        check_window([items[i] for i in indices], local, (prefix_tokens or {}).get(world, 0), window)
        first = len(requests)
        requests += [replace(r, item=indices[r.item]) for r in local]
        for batch in plan_batches(local, batch_size):
            rows.append({
                "world": world, "request": [first + k for k in batch],
                "item": [local[k].item for k in batch], "choice": [local[k].choice for k in batch],
                "context": [list(local[k].context) for k in batch],
                "continuation": [list(local[k].continuation) for k in batch],
            })
    return Plan(requests, rows)


class ConditionScorer:
    """A Ray Data callable class (and the local scorer): forward batches in, log-probs out.

    Rows arrive grouped by condition; the scorer holds one condition's model at a time (loaded
    when its first row arrives) and encodes each world's ICL prefix once, on first use."""

    def __init__(self, specs: dict[str, ConditionSpec], threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.specs = specs
        self.current: str | None = None
        self.prefixes: dict[str, Prefix] = {}

    def _activate(self, name: str) -> None:
        if name != self.current:
            self.model = self.tokenizer = None  # free the previous condition's model first
            self.prefixes = {}
            self.model, self.tokenizer = load_condition_model(self.specs[name], self.device)
            self.current = name

    def prefix(self, world: str) -> Prefix | None:
        contexts = dict(self.specs[self.current].contexts)
        if not contexts:
            return None
        if world not in self.prefixes:
            self.prefixes[world] = encode_prefix(self.model, self.tokenizer, contexts[world])
        return self.prefixes[world]

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: dict[str, list] = {"condition": [], "request": [], "logprob": [], "seconds": []}
        for row in batch.to_pylist():
            self._activate(row["condition"])
            start = time.perf_counter()
            requests = [Request(i, j, tuple(c), tuple(t))
                        for i, j, c, t in zip(row["item"], row["choice"], row["context"], row["continuation"])]
            out["logprob"] += score_batch(self.model, requests, self.prefix(row["world"]), True, pad_id(self.tokenizer))
            out["seconds"] += [(time.perf_counter() - start) / len(requests)] * len(requests)
            out["condition"] += [row["condition"]] * len(requests)
            out["request"] += row["request"]
        return pa.table({"condition": pa.array(out["condition"], pa.string()), "request": pa.array(out["request"], pa.int64()),
                         "logprob": pa.array(out["logprob"], pa.float64()), "seconds": pa.array(out["seconds"], pa.float64())})


def dataset_rows(plans: dict[str, Plan]) -> list[dict]:
    """Every condition's forward batches, grouped by condition (so an actor switches models rarely)."""
    return [{"condition": name, **row} for name, p in plans.items() for row in p.rows]


def _assemble(items: list[dict], plans: dict[str, Plan], rows: list[dict]) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """Per condition: item scores in item order, and the summed scoring seconds."""
    values = {name: [None] * len(p.requests) for name, p in plans.items()}
    seconds = dict.fromkeys(plans, 0.0)
    for r in rows:
        values[r["condition"]][r["request"]] = float(r["logprob"])
        seconds[r["condition"]] += float(r["seconds"])
    for name, v in values.items():
        missing = sum(x is None for x in v)
        if missing:
            raise RuntimeError(f"condition {name!r}: scoring returned no log-prob for {missing} of {len(v)} sequences")
    return {name: collect(items, plans[name].requests, values[name]) for name in plans}, seconds


def score_local(specs: dict[str, ConditionSpec], items: list[dict], plans: dict[str, Plan], threads: int | None = None):
    """Score every condition's plan in this process (no Ray): (scores per condition, seconds per condition)."""
    out = ConditionScorer(specs, threads)(pa.Table.from_pylist(dataset_rows(plans)))
    return _assemble(items, plans, out.to_pylist())


def pool_shape(ev: EvaluateConfig, cpus: float, gpus: float) -> PoolShape:
    """Actors x threads that fit the cluster's CPUs, or one GPU per actor."""
    use_gpu = ev.use_gpu if ev.use_gpu is not None else gpus >= 1
    if use_gpu:
        return PoolShape(ev.num_actors or max(1, int(gpus)), ev.threads_per_actor or 1, 1)
    actors = ev.num_actors or 1
    threads = ev.threads_per_actor or max(1, int(cpus) // actors)
    if actors * threads > cpus:
        raise ValueError(
            f"evaluate.num_actors={actors} x evaluate.threads_per_actor={threads} needs {actors * threads} CPUs; "
            f"the Ray cluster has {cpus:g}"
        )
    return PoolShape(actors, threads, 0)


def score_on_ray(specs: dict[str, ConditionSpec], items: list[dict], plans: dict[str, Plan], shape: PoolShape):
    """Score every condition's plan on one Ray Data actor pool (one dataset row per forward
    batch): (scores per condition, seconds per condition)."""
    import ray

    ds = ray.data.from_items(dataset_rows(plans))
    scored = ds.map_batches(
        ConditionScorer, fn_constructor_kwargs={"specs": specs, "threads": shape.threads},
        batch_size=1, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=shape.actors),
        num_cpus=shape.threads, num_gpus=shape.gpus_per_actor,
    )
    rows: list[dict] = []
    with Progress(sum(len(p.requests) for p in plans.values()), "scoring", unit="seq", logger=log) as progress:
        for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            part = batch.to_pylist()
            rows += part
            progress.update(len(part), condition=part[-1]["condition"] if part else "-")
    return _assemble(items, plans, rows)

