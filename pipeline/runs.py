"""Run folders: the saved config, and per-stage manifests that record what a finished stage made.

Layout of `<output_dir>/<name>/` (a local folder or a URI in run storage, see `pipeline.storage`):
    config.yaml            the resolved config, saved before any stage runs
    manifests/<stage>.json written last by a stage (atomically): its fingerprint (config keys,
                           inputs, upstream manifests and models it read; see
                           `pipeline.fingerprint`), every output file's size and sha256, the
                           code version, timing and summary. A stage is skipped only while its
                           fingerprint matches and its outputs are intact; a crashed one (no
                           manifest) is redone.
    data/ augment/ models/ scores/ plots/ results.json report.md   the stages' outputs
    train/                 Ray Train storage (checkpoints of unfinished fits)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass

import yaml

from pipeline import storage
from pipeline.config import ConfigError, RunConfig, config_to_dict, differing_keys, dump_yaml
from pipeline.fingerprint import code_version
from pipeline.records import write_json, write_text
from pipeline.storage import AnyPath

log = logging.getLogger(__name__)
STAGE_NAMES = ("data", "augment", "train", "evaluate", "report")


@dataclass(frozen=True)
class Run:
    """The folder of one run; every stage gets one of these and its config."""

    dir: AnyPath

    @classmethod
    def of(cls, cfg: RunConfig) -> "Run":
        return cls(storage.location(cfg.output_dir) / cfg.name)

    @property
    def config_path(self) -> AnyPath:
        return self.dir / "config.yaml"

    def path(self, *parts: str) -> AnyPath:
        return self.dir.joinpath(*parts)

    def manifest_path(self, stage: str) -> AnyPath:
        return self.dir / "manifests" / f"{stage}.json"

    def is_done(self, stage: str) -> bool:
        """A manifest exists (whether it is still current is `pipeline.stages.stage_state`'s call)."""
        return self.manifest_path(stage).is_file()

    def manifest(self, stage: str) -> dict:
        path = self.manifest_path(stage)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: stage {stage!r} has not finished in this run; run `python -m pipeline {stage}` first")
        return json.loads(path.read_text())

    def manifest_digest(self, stage: str) -> str | None:
        """sha256 of a stage's manifest file (None without one): what later stages record."""
        path = self.manifest_path(stage)
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    def finished_stages(self) -> list[str]:
        return [s for s in STAGE_NAMES if self.is_done(s)]

    def mark_done(self, stage: str, summary: dict, seconds: float, fingerprint: dict | None = None,
                  outputs: dict | None = None) -> None:
        write_json(self.manifest_path(stage), {
            "stage": stage, "finished_at": time.time(), "seconds": seconds, "fingerprint": fingerprint or {},
            "outputs": outputs or {}, "code": code_version(), "summary": summary,
        })

    def clear(self, stage: str) -> None:
        """Forget that a stage finished (its outputs are overwritten when it runs again)."""
        self.manifest_path(stage).unlink(missing_ok=True)

    def require(self, stage: str) -> dict:
        """The manifest of an earlier stage this one reads from; a clear error if it is missing."""
        return self.manifest(stage)

    def save_config(self, cfg: RunConfig, reconfigure: bool = False) -> list[str]:
        """Write config.yaml; return the keys that changed from the saved one.

        A changed config is accepted when no stage has finished in this folder (e.g. the first
        run failed validation) or with `reconfigure` (the stages that read a changed key then
        rerun); otherwise it is refused, naming the keys. `ray` and `serve` may always change."""
        diff: list[str] = []
        if self.config_path.is_file():
            old = yaml.safe_load(self.config_path.read_text()) or {}
            diff = differing_keys(old, config_to_dict(cfg))
            finished = self.finished_stages()
            if diff and finished and not reconfigure:
                shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
                raise ConfigError(
                    f"{self.dir}: this run folder was made with a different config (keys that differ: {shown}) "
                    f"and stages {', '.join(finished)} finished with it; add --reconfigure to accept the new "
                    "config (the stages that read a changed key rerun), or choose another name"
                )
            if diff:
                log.info(f"{self.config_path}: accepting a changed config (keys: {', '.join(diff[:8])})")
        write_text(self.config_path, dump_yaml(cfg))
        return diff
