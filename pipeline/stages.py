"""The stages of a run, in order, and how one is run: skip if finished, else run and mark done.

Each stage module exposes `run(cfg, run) -> dict` (a JSON summary saved in its manifest) and
`NEEDS_RAY` (whether the CLI must start or join Ray first). Stage code never calls ray.init().
"""

from __future__ import annotations

import importlib
import time
from types import ModuleType

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


def needs_ray(names: list[str], run: Run, force: bool) -> bool:
    """Whether any stage that will actually execute wants Ray."""
    for name in names:
        if force or not run.is_done(name):
            if getattr(stage_module(name), "NEEDS_RAY", False):
                return True
    return False


def run_stage(name: str, cfg: RunConfig, run: Run, force: bool = False, echo=print) -> dict:
    """Run one stage unless its manifest says it finished; return its summary."""
    if run.is_done(name) and not force:
        echo(f"[{name}] already done; skipped (--force to redo)")
        return run.manifest(name)["summary"]
    module = stage_module(name)
    run.clear(name)
    echo(f"[{name}] running")
    start = time.perf_counter()
    summary = module.run(cfg, run)
    seconds = time.perf_counter() - start
    run.mark_done(name, summary, seconds)
    echo(f"[{name}] done in {seconds:.1f} s")
    return summary
