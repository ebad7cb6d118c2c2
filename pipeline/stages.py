"""The stages of a run, in order, and how one is run: skip if done and current, else run and
record its manifest.

Each stage module exposes `run(cfg, run) -> dict` (a JSON summary saved in its manifest),
`NEEDS_RAY` (whether the CLI must start or join Ray first), `outputs(cfg)` (the run-relative files
and folders it writes, recorded with sizes and hashes) and what its fingerprint covers
(`CONFIG_KEYS`, `UPSTREAM` or `upstream(cfg)`, optionally `IGNORED_KEYS`, `derived_config`, `input_files`,
`model_refs`; see `pipeline.fingerprint`), and optionally `clean(cfg, run)` (what --force
discards: resumable partial work). Stage code never calls ray.init().
"""

from __future__ import annotations

import importlib
import logging
import time
from types import ModuleType

from pipeline import fingerprint
from pipeline.config import RunConfig
from pipeline.runs import Run

#: stage name -> module implementing it, in the order `run` executes them.
STAGES = {
    "data": "pipeline.data.stage",
    "augment": "pipeline.augment.stage",
    "train": "pipeline.train.stage",
    "evaluate": "pipeline.evaluate.stage",
    "report": "pipeline.report.stage",
}


def stage_module(name: str) -> ModuleType:
    return importlib.import_module(STAGES[name])


def upstream_of(module: ModuleType, cfg: RunConfig) -> tuple[str, ...]:
    """The earlier stages whose outputs a stage reads with this config."""
    return tuple(module.upstream(cfg)) if hasattr(module, "upstream") else tuple(getattr(module, "UPSTREAM", ()))


def stage_state(name: str, cfg: RunConfig, run: Run, _memo: dict | None = None) -> tuple[str, list[str]]:
    """("done" | "stale" | "missing", reasons): done only while the stage's fingerprint matches,
    its recorded outputs are intact and every upstream stage is done."""
    memo = {} if _memo is None else _memo
    if name in memo:
        return memo[name]
    module = stage_module(name)
    upstream = upstream_of(module, cfg)
    if not run.is_done(name):
        memo[name] = ("missing", [])
        return memo[name]
    manifest = run.manifest(name)
    now = fingerprint.expected(module, cfg, {u: run.manifest_digest(u) for u in upstream})
    reasons = fingerprint.differences(manifest.get("fingerprint", {}), now)
    reasons += fingerprint.check_outputs(run.dir, manifest.get("outputs", {}))
    for u in upstream:
        state, _ = stage_state(u, cfg, run, memo)
        if state != "done" and not any(r.startswith(f"upstream {u} ") for r in reasons):
            reasons.append(f"upstream {u} is {state}")
    memo[name] = ("stale" if reasons else "done", reasons)
    return memo[name]


def needs_ray(names: list[str], cfg: RunConfig, run: Run, force: bool) -> bool:
    """Whether any stage that will actually execute wants Ray."""
    memo: dict = {}
    for name in names:
        if force or stage_state(name, cfg, run, memo)[0] != "done":
            if getattr(stage_module(name), "NEEDS_RAY", False):
                return True
    return False


class StageOrderError(RuntimeError):
    """A stage asked for before the stages it reads from are done and current."""


def run_stage(name: str, cfg: RunConfig, run: Run, force: bool = False) -> dict:
    """Run one stage unless it is done and current; return its summary. With `force` its
    outputs and resumable work (the stage module's `clean`) are discarded first."""
    log = logging.getLogger(f"pipeline.{name}.stage")  # tagged with the stage on the console
    state, reasons = stage_state(name, cfg, run)
    if state == "done" and not force:
        log.info("already done and current; skipped (--force to redo)")
        return run.manifest(name)["summary"]
    module = stage_module(name)
    for upstream in upstream_of(module, cfg):
        up_state, up_reasons = stage_state(upstream, cfg, run)
        if up_state != "done":
            why = f" ({'; '.join(up_reasons)})" if up_reasons else ""
            raise StageOrderError(f"stage {name!r} reads the outputs of {upstream!r}, which is {up_state}{why}; "
                                  f"run `python -m pipeline {upstream} CONFIG` first, or `python -m pipeline run CONFIG`")
    expected = fingerprint.expected(module, cfg, {u: run.manifest_digest(u) for u in upstream_of(module, cfg)})
    run.clear(name)
    if force and hasattr(module, "clean"):
        module.clean(cfg, run)
    if state == "stale" and not force:
        log.info(f"stale ({'; '.join(reasons)}); running again")
    else:
        log.info("running")
    start = time.perf_counter()
    summary = module.run(cfg, run)
    seconds = time.perf_counter() - start
    record_done(name, cfg, run, summary, seconds, expected)
    log.info(f"done in {seconds:.1f} s")
    return summary


def record_done(name: str, cfg: RunConfig, run: Run, summary: dict, seconds: float, expected: dict | None = None) -> None:
    """Write a stage's manifest: its fingerprint (`expected`, computed before it ran; now if not
    given) and the size and hash of every output it wrote."""
    module = stage_module(name)
    if expected is None:
        expected = fingerprint.expected(module, cfg, {u: run.manifest_digest(u) for u in upstream_of(module, cfg)})
    run.mark_done(name, summary, seconds, expected, fingerprint.output_records(run.dir, module.outputs(cfg)))
