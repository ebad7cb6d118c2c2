"""The step plan of a fit: which examples each worker trains on at each step, padded per batch.

Length bucketing instead of packing: every epoch the examples are shuffled, sorted by length
inside windows of `bucket_batches` batches, cut into global batches, and the batches shuffled
again. A batch then holds examples of similar length, so right-padding wastes little compute,
and no example attends to another (packing would let facts see unrelated facts as context).
The last batch of an epoch is filled up with examples already seen in that epoch, so every
step has exactly `batch_size` examples. A global batch is cut into one contiguous micro-batch
per worker. Pure functions: no Ray, no torch.
"""

from __future__ import annotations

import random

from pipeline.train.examples import IGNORE, TokenizedExample


class PlanError(ValueError):
    """A batch plan that cannot be made from the data; names the offending value."""


def plan_steps(
    lengths: list[int], batch_size: int, num_workers: int, epochs: int,
    max_steps: int | None, bucket_batches: int, seed: int,
) -> list[list[list[int]]]:
    """steps -> workers -> example indices. `max_steps` (if set) replaces `epochs`."""
    n = len(lengths)
    if n == 0:
        raise PlanError("no training examples")
    if batch_size > n:
        raise PlanError(f"train.batch_size {batch_size} is larger than the {n} training examples")
    if batch_size % num_workers:
        raise PlanError(f"train.batch_size {batch_size} is not divisible by train.num_workers {num_workers}")
    rng = random.Random(seed)
    steps: list[list[list[int]]] = []
    epoch = 0
    while (epoch < epochs) if max_steps is None else (len(steps) < max_steps):
        steps.extend(_epoch_batches(lengths, batch_size, num_workers, bucket_batches, rng))
        epoch += 1
    return steps[:max_steps] if max_steps is not None else steps


def _epoch_batches(lengths, batch_size, num_workers, bucket_batches, rng) -> list[list[list[int]]]:
    order = list(range(len(lengths)))
    rng.shuffle(order)
    short = -len(order) % batch_size
    order += order[:short]  # fill the last batch with examples already seen this epoch
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    micro = batch_size // num_workers
    return [[batch[w * micro:(w + 1) * micro] for w in range(num_workers)] for batch in batches]


def micro_batch(examples: list[TokenizedExample], pad_id: int) -> dict:
    """One right-padded micro-batch as flat lists (a Ray Data row): input_ids, labels, lengths, shape."""
    width = max(len(ex) for ex in examples)
    ids: list[int] = []
    labels: list[int] = []
    for ex in examples:
        pad = width - len(ex)
        ids += list(ex.input_ids) + [pad_id] * pad
        labels += ex.labels + [IGNORE] * pad
    return {
        "input_ids": ids, "labels": labels, "lengths": [len(ex) for ex in examples],
        "rows": len(examples), "width": width,
    }


def plan_rows(plan: list[list[list[int]]], examples: list[TokenizedExample], pad_id: int) -> list[dict]:
    """The plan as rows, step-major: row k is step k // workers, worker slot k % workers."""
    rows = []
    for step, workers in enumerate(plan):
        for slot, idx in enumerate(workers):
            rows.append({"step": step, "slot": slot, **micro_batch([examples[i] for i in idx], pad_id)})
    return rows


def padding_share(rows: list[dict]) -> float:
    """Share of the computed token positions that are padding."""
    computed = sum(r["rows"] * r["width"] for r in rows)
    real = sum(sum(r["lengths"]) for r in rows)
    return 1 - real / computed if computed else 0.0
