"""The models a finished run can serve: the base model and every tuned folder under models/.

Each is a `pipeline.conditions.ConditionSpec`, loaded by `pipeline.conditions.load_condition_model`
as the evaluator loads it (a LoRA adapter is merged into the run's model). A folder that is not a
loadable model (e.g. an export that never finished) is not served.
"""

from __future__ import annotations

from pipeline.conditions import BASE_WEIGHT_CONDITIONS, ConditionSpec, folder_spec, report_order
from pipeline.config import RunConfig
from pipeline.models import ModelError
from pipeline.runs import Run

BASE = "base"


def tuned_checkpoints(cfg: RunConfig, run: Run) -> dict[str, ConditionSpec]:
    """Tuned models with a loadable folder under models/, in report order."""
    root = run.path("models")
    if not root.is_dir():
        return {}
    found: dict[str, ConditionSpec] = {}
    for name in report_order(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            found[name] = folder_spec(name, cfg.model, root / name, f"models/{name}")
        except ModelError:
            continue
    return found


def served_models(cfg: RunConfig, run: Run) -> dict[str, ConditionSpec]:
    """Every model the generation deployment serves: base first, then the tuned folders."""
    return {BASE: ConditionSpec(BASE, cfg.model, cfg.model), **tuned_checkpoints(cfg, run)}


def weights_for_condition(condition: str, cfg: RunConfig, run: Run) -> str:
    """The served model whose weights score `condition` (icl -> base); KeyError if unknown."""
    if condition in BASE_WEIGHT_CONDITIONS:
        return BASE
    if condition in tuned_checkpoints(cfg, run):
        return condition
    raise KeyError(condition)
