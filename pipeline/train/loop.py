"""One fit on Ray Train: the per-worker loop (DeepSpeed engine, Ray Data shard, checkpoints) and the
`TorchTrainer` that runs it.

Each row of the dataset is one worker's micro-batch of one step (see `batches.py`); Ray Data
splits the rows evenly over the workers. Every `checkpoint_every` steps all ranks write their
ZeRO shards (model, optimizer, LR scheduler, step) and report them with `ray.train.report`;
Ray Train keeps only the latest. After a worker failure Ray Train restarts the group (up to
`max_failures` times), the loop restores the last checkpoint and skips the rows of the steps it
already made, so the fit ends at the same total number of steps. At the end the weights are
gathered (ZeRO-3 shards included) and rank 0 reports them as the final checkpoint: a plain HF
folder (see `export.py`) plus `train_log.json`, the loss of every step.

Fault injection: `fit(..., fail_after_step=N)` makes rank 0 raise once, right after optimizer
step N, to exercise the resume path.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

from pipeline.logs import Progress
from pipeline import storage
from pipeline.train.config import TrainConfig

# Progress goes through logging: Ray Train's workers send a print both to the console and to the
# root logger, which the driver then shows twice.
log = logging.getLogger(__name__)
ZERO_TAG = "zero"  # tag of the DeepSpeed checkpoint inside a Ray checkpoint folder
PROGRESS = "progress.json"  # step and losses so far, beside the ZeRO shards
TRAIN_LOG = "train_log.json"  # the loss of every step, beside the exported weights


class InjectedFailure(RuntimeError):
    """The failure `fail_after_step` injects."""


def to_tensors(row: dict, device) -> dict:
    """A dataset row (flat lists, see batches.micro_batch) -> model inputs on `device`."""
    import numpy as np
    import torch

    n, width = int(row["rows"]), int(row["width"])
    ids = torch.as_tensor(np.asarray(row["input_ids"], dtype=np.int64)).view(n, width)
    labels = torch.as_tensor(np.asarray(row["labels"], dtype=np.int64)).view(n, width)
    lengths = torch.as_tensor(np.asarray(row["lengths"], dtype=np.int64))
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def _mean_over_workers(value: float, world: int) -> float:
    if world == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world


def _save_checkpoint(engine, step: int, losses: list[float], rank: int) -> None:
    import ray.train

    with tempfile.TemporaryDirectory(prefix="zero-ckpt-") as d:
        engine.save_checkpoint(d, tag=ZERO_TAG)
        if rank == 0:
            Path(d, PROGRESS).write_text(json.dumps({"step": step, "losses": losses}))
        ray.train.report({"step": step, "loss": losses[-1]}, checkpoint=ray.train.Checkpoint.from_directory(d))


def _restore(engine) -> tuple[int, list[float]]:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as d:
        progress = json.loads(Path(d, PROGRESS).read_text())
        path, _ = engine.load_checkpoint(d, tag=ZERO_TAG, load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"{d}: no DeepSpeed checkpoint {ZERO_TAG!r} to resume from")
    return int(progress["step"]), list(progress["losses"])


def _maybe_fail(config: dict, step: int, rank: int) -> None:
    marker = config.get("fail_marker")
    if rank == 0 and step == config.get("fail_at_step") and marker and not Path(marker).exists():
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        Path(marker).write_text(str(step))
        raise InjectedFailure(f"injected failure after step {step} (fail_after_step)")


def probe_loss(engine, row: dict) -> float:
    """Mean target-token loss of the engine's model on one micro-batch, in eval mode."""
    import torch

    engine.eval()
    with torch.no_grad():
        loss = engine(**to_tensors(row, engine.device)).loss
    engine.train()
    return float(loss.item())


def train_loop(config: dict) -> None:
    """Ray Train worker function; `config` is built by `fit`."""
    import ray.train
    import torch

    from pipeline.logs import worker_setup
    from pipeline.train.engine import build_engine
    from pipeline.train.export import write_trained_model

    worker_setup()  # again: Ray Train configures the worker's logging after the process started

    warnings.filterwarnings("ignore", message=r".*reduce_scatter_tensor.*", category=FutureWarning)
    train = TrainConfig.model_validate(config["train"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    total = config["total_steps"]

    setup_start = time.perf_counter()
    if config.get("model"):  # the model as a folder on this node (fetched or built here if need be)
        from pipeline.models import local_model_folder
        from pipeline.section import ModelConfig

        config["model_path"] = str(local_model_folder(ModelConfig(**config["model"])))
    engine, bf16 = build_engine(config["model_path"], train, total, world)
    start, losses = _restore(engine)
    # the first row starts the shard's streaming pipeline: that start-up is setup, not training
    rows = iter(ray.train.get_dataset_shard("train").iter_rows())
    first = next(rows, None)
    setup_seconds = time.perf_counter() - setup_start

    step, tokens, computed, data_seconds = 0, 0, 0, 0.0
    first_step_seconds, first_step_tokens = None, 0  # the first step this attempt made: warm-up
    progress = Progress(total - start, f"train {config['name']}", unit="steps", logger=log) if rank == 0 else None
    train_start = fetch_start = time.perf_counter()
    engine.train()
    for row in itertools.chain([first] if first is not None else [], rows):
        data_seconds += time.perf_counter() - fetch_start
        step += 1
        if step <= start:
            continue  # made before the restart
        loss = engine(**to_tensors(row, engine.device)).loss
        engine.backward(loss)
        engine.step()
        losses.append(_mean_over_workers(float(loss.item()), world))
        tokens += int(sum(row["lengths"]))
        computed += int(row["rows"]) * int(row["width"])
        if first_step_seconds is None:
            first_step_seconds, first_step_tokens = time.perf_counter() - train_start, tokens
        if progress is not None:
            progress.update(1, step=f"{step}/{total}", loss=f"{losses[-1]:.4f}", lr=f"{engine.get_lr()[0]:.2e}")
        _maybe_fail(config, step, rank)
        if train.checkpoint_every and step % train.checkpoint_every == 0 and step < total:
            _save_checkpoint(engine, step, losses, rank)
        fetch_start = time.perf_counter()
    train_seconds = time.perf_counter() - train_start
    if progress is not None:
        progress.close(loss=f"{losses[-1]:.4f}" if losses else "-")
    if step != total:
        raise RuntimeError(f"worker {rank} got {step} batches from its data shard, expected {total}")

    final_probe = probe_loss(engine, config["probe"]) if config.get("probe") else None
    with tempfile.TemporaryDirectory(prefix="export-") as d:
        write_trained_model(engine, train, config["model_path"], d, rank)
        if rank == 0:
            Path(d, TRAIN_LOG).write_text(json.dumps({"losses": losses}) + "\n")
        metrics = {
            "step": step, "resumed_from_step": start, "final_loss": losses[-1], "probe_loss": final_probe,
            "bf16": bf16, "setup_seconds": setup_seconds, "train_seconds": train_seconds,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),  # the allocator settings (pipeline.allocator)
            "data_wait_seconds": data_seconds,
            "tokens": _mean_over_workers(tokens, world) * world,
            "computed_tokens": _mean_over_workers(computed, world) * world,
        }
        metrics["tokens_per_s"] = metrics["tokens"] / train_seconds if train_seconds > 0 else None
        metrics.update(first_step_seconds=first_step_seconds,
                       steady_tokens_per_s=_steady_rate(tokens - first_step_tokens, train_seconds - (first_step_seconds or 0), world))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)


def _steady_rate(tokens: int, seconds: float, world: int) -> float | None:
    """Tokens/s over the steps after the first, which is a warm-up: in a fresh worker process it
    takes several times as long as a later step (docs/benchmarks.md). None with no step after it."""
    total = _mean_over_workers(tokens, world) * world
    return total / seconds if seconds > 0 and total > 0 else None


def read_losses(folder) -> list[float]:
    """The per-step losses a fit wrote beside its exported weights."""
    return json.loads(Path(folder, TRAIN_LOG).read_text())["losses"]


def fit(
    name: str, rows: list[dict], train: TrainConfig, model_path: str, seed: int,
    storage_path, probe: dict | None = None, cpus_per_worker: int | None = None,
    fail_after_step: int | None = None, model=None,
):
    """Run one fit on Ray Train; returns the Ray `Result` (final checkpoint = the exported model).
    `storage_path`: a local folder or a run-storage location (`pipeline.storage`); a fit of the same
    name with checkpoints there resumes from the latest. `model` (a ModelConfig): the workers
    resolve it on their own node instead of loading `model_path`.
    `fail_after_step`: rank 0 raises once after that step (fault injection for resume tests)."""
    import ray
    from ray.data import ExecutionOptions
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    from pipeline.allocator import worker_env

    total = len(rows) // train.num_workers
    if total * train.num_workers != len(rows) or total == 0:
        raise ValueError(f"{name}: {len(rows)} rows do not make whole steps for {train.num_workers} workers")
    where = storage.location(storage_path) if isinstance(storage_path, str) else storage_path
    fs, fs_path = storage.filesystem(where)
    fs = fs if storage.is_remote(where) else None  # a local folder: Ray Train's own default
    marker_dir = Path(tempfile.gettempdir()) if fs is not None else Path(fs_path)
    config = {
        "name": name, "train": train.model_dump(mode="json"), "model_path": str(model_path), "seed": seed,
        "model": model.model_dump(mode="json") if model is not None else None,
        "total_steps": total, "probe": probe, "threads": None if train.use_gpu else cpus_per_worker,
        "fail_at_step": fail_after_step,
        "fail_marker": str(marker_dir / f".{name}.failed-once") if fail_after_step else None,
    }
    resources = {"CPU": cpus_per_worker} if cpus_per_worker else None
    dataset = ray.data.from_items(rows)
    dataset.context.enable_progress_bars = False
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name, storage_path=fs_path, storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            logging_config=LoggingConfig(log_level="WARNING"),  # the worker loop logs our own progress
            # on CPU, malloc keeps the memory a step frees for the next one (pipeline.allocator)
            worker_runtime_env={"env_vars": worker_env(train.use_gpu)},
        ),
        datasets={"train": dataset},
        dataset_config=DataConfig(execution_options=ExecutionOptions(preserve_order=True)),
    )
    return trainer.fit()
