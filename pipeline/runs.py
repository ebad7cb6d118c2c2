"""Run folders: the saved config, and per-stage manifests that mark a stage done.

Layout of `<output_dir>/<name>/`:
    config.yaml            the resolved config, saved before any stage runs
    manifests/<stage>.json written last by a stage (atomic), so a finished stage is skipped on
                           re-run and a crashed one (no manifest) is redone
    data/ augment/ models/ scores/ plots/ results.json report.md   the stages' outputs
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import ConfigError, RunConfig, config_to_dict, differing_keys, dump_yaml
from pipeline.records import write_json, write_text


@dataclass(frozen=True)
class Run:
    """The folder of one run; every stage gets one of these and its config."""

    dir: Path

    @classmethod
    def of(cls, cfg: RunConfig) -> "Run":
        return cls(cfg.run_dir)

    @property
    def config_path(self) -> Path:
        return self.dir / "config.yaml"

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def manifest_path(self, stage: str) -> Path:
        return self.dir / "manifests" / f"{stage}.json"

    def is_done(self, stage: str) -> bool:
        return self.manifest_path(stage).is_file()

    def manifest(self, stage: str) -> dict:
        path = self.manifest_path(stage)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: stage {stage!r} has not finished in this run; run `python -m pipeline {stage}` first")
        return json.loads(path.read_text())

    def mark_done(self, stage: str, summary: dict, seconds: float) -> None:
        write_json(self.manifest_path(stage), {"stage": stage, "finished_at": time.time(), "seconds": seconds, "summary": summary})

    def clear(self, stage: str) -> None:
        """Forget that a stage finished (its outputs are overwritten when it runs again)."""
        self.manifest_path(stage).unlink(missing_ok=True)

    def require(self, stage: str) -> dict:
        """The manifest of an earlier stage this one reads from; a clear error if it is missing."""
        return self.manifest(stage)

    def save_config(self, cfg: RunConfig, force: bool = False) -> None:
        """Write config.yaml; refuse a run folder made with a different config unless forced."""
        if self.config_path.is_file() and not force:
            old = yaml.safe_load(self.config_path.read_text()) or {}
            diff = differing_keys(old, config_to_dict(cfg))
            if diff:
                shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
                raise ConfigError(
                    f"{self.dir}: this run folder was made with a different config (keys that differ: {shown}); "
                    "use --force to redo it with the new config, or choose another name"
                )
        write_text(self.config_path, dump_yaml(cfg))
