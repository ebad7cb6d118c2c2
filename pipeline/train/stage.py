"""The `train` stage: fine-tune the model once per FT condition -> `<run>/models/<condition>/`.

Every check runs before any worker starts: the training docs exist, each condition's
augmentations exist, the model loads (config, architecture, weight files, LoRA targets), the
examples fit the context window and the batch is not larger than the data. Then one Ray Train
fit per condition (`loop.fit`); a condition whose model folder is complete and was trained with
the same config and data is skipped, so a killed run redoes only the unfinished conditions.
Conditions whose examples are identical (an augmentation that produced nothing usable leaves
ft+local training on exactly ft's examples) share one fit: same seed, config and data make the
same model, so each gets a copy of it, its record naming the fit (`same_fit_as`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline import storage
from pipeline.conditions import FT_STRATEGIES
from pipeline.config import RunConfig
from pipeline.models import (
    check_trainable,
    context_window,
    load_tokenizer,
    local_model_folder,
)
from pipeline.records import Doc, RecordError, read_records
from pipeline.runs import Run
from pipeline.storage import AnyPath
from pipeline.train import attempts, export
from pipeline.train.batches import PlanError, padding_share, plan_rows, plan_steps
from pipeline.train.examples import build_examples, condition_docs, tokenize_examples

log = logging.getLogger(__name__)
NEEDS_RAY = True
#: What the models depend on (see pipeline.fingerprint): the train section, the seed, the model
#: (its weights and window; `model.dtype` is for scoring only), the FT conditions, and the data
#: and augmentations they train on. Where checkpoints go and how often a fit may fail do not count.
CONFIG_KEYS = ("seed", "model", "train")
IGNORED_KEYS = ("model.dtype", "train.storage_path", "train.max_failures")


def derived_config(cfg: RunConfig) -> dict:
    return {"ft_conditions": cfg.ft_conditions()}


def upstream(cfg: RunConfig) -> tuple[str, ...]:
    return ("data", "augment") if cfg.strategies() else ("data",)


def model_refs(cfg: RunConfig) -> dict:
    return {"model": cfg.model}


def outputs(cfg: RunConfig) -> list[str]:
    return [f"models/{c}" for c in cfg.ft_conditions()]


def clean(cfg: RunConfig, run: Run) -> None:
    """--force: drop the conditions' model folders and their fits' checkpoints, so all retrain."""
    from pipeline.storage import remove

    for c in cfg.ft_conditions():
        remove(run.path("models", c))
        remove(storage_location(cfg, run) / fit_name(c))


class TrainInputError(ValueError):
    """Training input that cannot be used; names the condition, file or key."""


@dataclass
class Prepared:
    condition: str
    docs: int
    rows: list[dict]
    examples: int
    steps: int
    padding_share: float
    fingerprint: str
    augmented: int = 0  # of `docs`, how many are augmentations


def augmented_docs(cfg: RunConfig, run: Run) -> list[dict]:
    """The augmented docs the configured conditions need ([] if none needs any)."""
    if not cfg.strategies():
        return []
    path = run.path("augment", "augmented.parquet")
    if not path.is_file():
        needing = [c for c in cfg.ft_conditions() if FT_STRATEGIES[c]]
        raise TrainInputError(
            f"conditions {needing} train on augmented docs, and {path} does not exist; "
            "run `python -m pipeline augment CONFIG` first"
        )
    return read_records(path, Doc)


def prepare(condition: str, cfg: RunConfig, train_docs, extra_docs, tokenizer, max_length: int) -> Prepared:
    """Examples, step plan and dataset rows of one condition; raises on bad input."""
    train = cfg.train
    if not any(d["origin"] == "train" for d in train_docs):
        raise TrainInputError(f"condition {condition!r}: no training docs (origin 'train') in data/docs.parquet")
    docs = condition_docs(condition, train_docs, extra_docs, train.oracle_min_copies)
    examples = tokenize_examples(build_examples(docs, train.sentence_split), tokenizer, max_length)
    try:
        plan = plan_steps([len(e) for e in examples], train.batch_size, train.num_workers, train.epochs,
                          train.max_steps, train.bucket_batches, cfg.seed)
    except PlanError as err:
        raise TrainInputError(f"condition {condition!r}: {err}") from None
    rows = plan_rows(plan, examples, tokenizer.pad_token_id)
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex.doc_id, ex.input_ids, ex.num_context]).encode())
    distinct = {d["doc_id"]: d for d in docs}  # an oracle doc may be trained several times (see examples.py)
    augmented = sum(d["origin"] != "train" for d in distinct.values())
    return Prepared(condition, len(distinct), rows, len(examples), len(plan), padding_share(rows), digest.hexdigest()[:16], augmented)


def training_record(cfg: RunConfig, p: Prepared, model_path) -> dict:
    """What a model folder was trained with; equal records mean the folder can be reused."""
    return {
        "condition": p.condition, "model": cfg.model.model_dump(mode="json"), "base_model_path": str(model_path),
        "seed": cfg.seed, "train": cfg.train.model_dump(mode="json"), "data_fingerprint": p.fingerprint,
        "strategies": list(FT_STRATEGIES[p.condition]),
    }


def reusable(target: Path, record: dict) -> bool:
    """A complete model folder trained with the same config and data as `record` asks for."""
    saved = export.saved_record(target)
    return saved is not None and {k: saved.get(k) for k in record} == record


def cpus_per_worker(cfg: RunConfig) -> int | None:
    """Explicit setting, else 1 with GPUs, else the cluster's CPUs shared among the workers."""
    train = cfg.train
    if train.cpus_per_worker or train.use_gpu:
        return train.cpus_per_worker or 1
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < train.num_workers:
        raise TrainInputError(f"train.num_workers {train.num_workers} needs at least that many CPUs; the Ray cluster has {cpus}")
    return cpus // train.num_workers


def storage_location(cfg: RunConfig, run: Run) -> AnyPath:
    """Ray Train storage: train.storage_path (a folder or URI), else <run>/train in run storage."""
    given = cfg.train.storage_path
    return storage.location(given) if given else run.path("train")


def fit_name(condition: str) -> str:
    """The Ray Train run name of a condition's fit (its folder in the Ray Train storage)."""
    return condition.replace("+", "_")


def run(cfg: RunConfig, run: Run) -> dict:
    from types import SimpleNamespace

    from ray.train import Checkpoint

    from pipeline.train.loop import fit, read_losses

    run.require("data")
    try:
        train_docs = read_records(run.path("data", "docs.parquet"), Doc)
    except RecordError as err:
        raise TrainInputError(str(err)) from None
    extra_docs = augmented_docs(cfg, run)
    model_path = local_model_folder(cfg.model)
    check_trainable(model_path, cfg.train.lora.target_modules if cfg.train.lora else None)
    tokenizer = load_tokenizer(cfg.model)
    max_length = context_window(cfg.model)
    prepared = [prepare(c, cfg, train_docs, extra_docs, tokenizer, max_length) for c in cfg.ft_conditions()]
    if cfg.train.use_gpu:  # a cluster that scales GPUs from zero: ask, wait, or fail; never CPU
        from pipeline.ray_session import wait_for_gpus

        wait_for_gpus(cfg.train.num_workers, "train.use_gpu", cfg.ray.gpu_wait_s)
    cpus = cpus_per_worker(cfg)
    store = storage_location(cfg, run)

    entries: dict[str, dict] = {}
    groups: dict[str, list[Prepared]] = {}  # examples' fingerprint -> conditions that train on exactly them
    for p in prepared:
        if reusable(run.path("models", p.condition), training_record(cfg, p, model_path)):
            log.info(f"{p.condition}: {run.path('models', p.condition)} is complete; skipped")
            entries[p.condition] = {**_facts(p), "skipped": True}
        else:
            groups.setdefault(p.fingerprint, []).append(p)
    for p, *same in groups.values():
        name = fit_name(p.condition)
        record = training_record(cfg, p, model_path)
        attempt = attempts.prepare(store / name, record)  # resume a killed attempt of this same training
        log.info(f"{p.condition}: {p.examples} examples from {p.docs} docs ({p.augmented} augmented), {p.steps} steps, "
                 f"padding {p.padding_share:.1%}")
        for q in same:  # same seed, config and examples: the same model, so one fit serves all
            log.info(f"{q.condition}: the same examples as {p.condition} ({q.augmented} augmented docs); "
                     f"its model is {p.condition}'s fit")
        if attempt.state == "finished":  # the fit ended before the kill; only its export was missing
            fs, path = storage.filesystem(attempt.checkpoint)
            result = SimpleNamespace(metrics=attempt.metrics, checkpoint=Checkpoint(path, filesystem=fs))
        else:
            result = fit(name, p.rows, cfg.train, str(model_path), cfg.seed, store, cpus_per_worker=cpus, model=cfg.model)
        with result.checkpoint.as_directory() as exported:
            numbers = _numbers(result.metrics, read_losses(exported), p.examples, cfg.train.batch_size)
            for q in [p, *same]:
                shared = {"same_fit_as": p.condition} if q is not p else {}
                export.finalize(Path(exported), run.path("models", q.condition), tokenizer,
                                {**training_record(cfg, q, model_path), "result": {**_facts(q), **numbers, **shared}})
                entries[q.condition] = {**_facts(q), **numbers, **shared, "skipped": False}
        storage.remove(store / name)
    if not storage.is_remote(store) and store.is_dir() and not any(store.iterdir()):
        store.rmdir()
    return {p.condition: entries[p.condition] for p in prepared}


def _facts(p: Prepared) -> dict:
    return {"docs": p.docs, "augmented_docs": p.augmented, "examples": p.examples, "steps": p.steps,
            "padding_share": round(p.padding_share, 4)}


def _numbers(m: dict, losses: list[float], examples: int, batch_size: int) -> dict:
    """What a fit measured: losses of its first and last epoch, precision, tokens, times."""
    per_epoch = min(len(losses), -(-examples // batch_size))
    return {
        "first_epoch_loss": round(sum(losses[:per_epoch]) / per_epoch, 4),
        "last_epoch_loss": round(sum(losses[-per_epoch:]) / per_epoch, 4),
        "bf16": m["bf16"], "tokens": m["tokens"], "train_seconds": round(m["train_seconds"], 2),
        "setup_seconds": round(m["setup_seconds"], 2), "data_wait_seconds": round(m["data_wait_seconds"], 2),
        "tokens_per_s": round(m["tokens_per_s"] or 0, 1), "resumed_from_step": m["resumed_from_step"],
        "first_step_seconds": round(m.get("first_step_seconds") or 0, 2),
        "steady_tokens_per_s": round(m.get("steady_tokens_per_s") or 0, 1),
    }
