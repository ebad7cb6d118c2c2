"""Scorer actors: one condition's model (and ICL prefixes) scoring planned forward batches.

The driver tokenizes every item and plans the forward batches (`plan`, batches never mix
worlds when a world's ICL prefix is read first). The same `ConditionScorer` then scores them in
this process (`score_local`) or as a Ray Data actor pool (`score_on_ray`): CPU actors get
`threads` torch threads each and fit the cluster's CPUs, GPU actors one GPU each. A prefix is
encoded once per actor, on first use. Because the plan fixes every batch's contents and shape,
every split of the batches over actors gives the same numbers as one process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pyarrow as pa

from pipeline import models
from pipeline.evaluate.conditions import ConditionSpec, load_condition_model
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.scoring import Prefix, Request, ScoringError, collect, encode_prefix, item_requests, pad_id, plan_batches, score_batch


@dataclass(frozen=True)
class Plan:
    """Every (item, choice) request, and one dataset row per forward batch."""

    requests: list[Request]
    rows: list[dict]  # world, request (indices), context, continuation (token id lists)


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
        offset = (prefix_tokens or {}).get(world, 0)
        for r in local:
            if offset + len(r.context) + len(r.continuation) - 1 > window:
                raise ScoringError(
                    f"item {items[indices[r.item]]['item_id']!r}: {offset + len(r.context) + len(r.continuation) - 1} "
                    f"tokens (with its context) exceed the model's window of {window}"
                )
        first = len(requests)
        requests += [replace(r, item=indices[r.item]) for r in local]
        for batch in plan_batches(local, batch_size):
            rows.append({
                "world": world, "request": [first + k for k in batch],
                "context": [list(local[k].context) for k in batch],
                "continuation": [list(local[k].continuation) for k in batch],
            })
    return Plan(requests, rows)


class ConditionScorer:
    """A Ray Data callable class (and the local scorer): forward batches in, log-probs out."""

    def __init__(self, spec: ConditionSpec, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.tokenizer = load_condition_model(spec, self.device)
        self.contexts = dict(spec.contexts)
        self.prefixes: dict[str, Prefix] = {}

    def prefix(self, world: str) -> Prefix | None:
        if not self.contexts:
            return None
        if world not in self.prefixes:
            self.prefixes[world] = encode_prefix(self.model, self.tokenizer, self.contexts[world])
        return self.prefixes[world]

    def __call__(self, batch: pa.Table) -> pa.Table:
        request_ids, logprobs = [], []
        for row in batch.to_pylist():
            requests = [Request(0, 0, tuple(c), tuple(t)) for c, t in zip(row["context"], row["continuation"])]
            logprobs += score_batch(self.model, requests, self.prefix(row["world"]), True, pad_id(self.tokenizer))
            request_ids += row["request"]
        return pa.table({"request": pa.array(request_ids, pa.int64()), "logprob": pa.array(logprobs, pa.float64())})


def _assemble(items: list[dict], the_plan: Plan, request_ids, logprobs) -> list[dict]:
    values: list[float | None] = [None] * len(the_plan.requests)
    for k, value in zip(request_ids, logprobs):
        values[k] = float(value)
    missing = [k for k, v in enumerate(values) if v is None]
    if missing:
        raise RuntimeError(f"scoring returned no log-prob for {len(missing)} of {len(values)} sequences")
    return collect(items, the_plan.requests, values)


def score_local(spec: ConditionSpec, items: list[dict], the_plan: Plan, threads: int | None = None) -> list[dict]:
    """Score a plan in this process (no Ray)."""
    out = ConditionScorer(spec, threads)(pa.Table.from_pylist(the_plan.rows))
    return _assemble(items, the_plan, out.column("request").to_pylist(), out.column("logprob").to_pylist())


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


def score_on_ray(spec: ConditionSpec, items: list[dict], the_plan: Plan, shape: PoolShape) -> list[dict]:
    """Score a plan on a Ray Data actor pool: one dataset row per forward batch."""
    import ray

    ds = ray.data.from_items(the_plan.rows)
    scored = ds.map_batches(
        ConditionScorer, fn_constructor_kwargs={"spec": spec, "threads": shape.threads},
        batch_size=1, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=shape.actors),
        num_cpus=shape.threads, num_gpus=shape.gpus_per_actor,
    )
    rows = scored.take_all()
    return _assemble(items, the_plan, [r["request"] for r in rows], [r["logprob"] for r in rows])


def condition_window(spec: ConditionSpec) -> int:
    """The context window of a condition's model (an adapter's is its base's)."""
    return models.context_window(spec.base if spec.adapter else spec.model)
