"""The Ray Train folder of one fit (`<run>/train/<fit>/`) across attempts of the same training.

A run killed mid-fit (the driver included) leaves this folder behind: Ray Train's checkpoints and
its `checkpoint_manager_snapshot.json`, which Ray Train reads when a fit of the same name starts
in the same storage, so the fit resumes from its last checkpoint. `attempt.json` records which
training (the digest of the condition's training record: config, data, base model) the folder
belongs to; a folder of other training, or one whose snapshot is unreadable or names a checkpoint
that is gone (killed while writing), is deleted and the fit starts over. When the latest
checkpoint is the fit's final export, the fit had finished before the kill: the stage exports it
without training again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from pipeline import storage
from pipeline.fingerprint import digest_of
from pipeline.records import write_json
from pipeline.storage import AnyPath

log = logging.getLogger(__name__)
ATTEMPT = "attempt.json"
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train 2.x's record of a run's checkpoints
FINAL_METRIC = "final_loss"  # only the final (export) report has it; see loop.train_loop


@dataclass
class Attempt:
    state: str  # "fresh" | "resume" | "finished"
    step: int | None = None  # the step of the checkpoint a resumed fit starts from
    checkpoint: AnyPath | None = None  # "finished": the exported model's checkpoint folder
    metrics: dict | None = None  # "finished": its final metrics


def _snapshot(folder: AnyPath) -> dict | None:
    try:
        snap = json.loads((folder / SNAPSHOT).read_text())
    except (OSError, ValueError):
        return None
    names = [r.get("checkpoint_dir_name") for r in snap.get("checkpoint_results", [])]
    if not all(name and (folder / name).is_dir() for name in names):
        return None
    return snap


def prepare(folder: AnyPath, record: dict) -> Attempt:
    """Keep `folder` if it holds a resumable attempt of this training, else clear it; record the
    training it now belongs to."""
    digest = digest_of(record)
    if storage.list_files(folder):
        try:
            mine = json.loads((folder / ATTEMPT).read_text()).get("record") == digest
        except (OSError, ValueError):
            mine = False
        snap = _snapshot(folder) if mine else None
        latest = (snap or {}).get("latest_checkpoint_result")
        if mine and latest:
            metrics = latest.get("metrics", {})
            if FINAL_METRIC in metrics:
                return Attempt("finished", metrics.get("step"), folder / latest["checkpoint_dir_name"], metrics)
            log.info(f"{folder}: resuming an earlier attempt of this fit from its checkpoint at step {metrics.get('step')}")
            return Attempt("resume", metrics.get("step"))
        storage.remove(folder)  # other training, or killed before its first complete checkpoint
    write_json(folder / ATTEMPT, {"record": digest})
    return Attempt("fresh")
