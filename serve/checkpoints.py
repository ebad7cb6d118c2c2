"""The models a finished run can serve: the base model and every tuned condition on disk.

`models/<condition>/` is either a plain HF folder (config.json + safetensors) or a LoRA adapter
folder (adapter_config.json), applied to the run's base model and merged for inference. The
tokenizer is always the base model's: fine-tuning never changes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import CONDITIONS, RunConfig
from pipeline.models import ModelError, load_model
from pipeline.runs import Run

BASE = "base"
#: Conditions scored with the base model's weights (ICL adds the run's corpus as a prefix).
BASE_WEIGHT_CONDITIONS = ("base", "icl")


@dataclass(frozen=True)
class Checkpoint:
    """One servable model: its name (a condition), its folder, and whether it is a LoRA adapter."""

    name: str
    path: Path | None  # None: the base model of cfg.model
    adapter: bool = False


def tuned_checkpoints(run: Run) -> dict[str, Checkpoint]:
    """Tuned conditions with a loadable folder under models/, in report order."""
    root = run.path("models")
    found: dict[str, Checkpoint] = {}
    if not root.is_dir():
        return found
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    order = {c: i for i, c in enumerate(CONDITIONS)}
    for name in sorted(names, key=lambda n: (order.get(n, len(order)), n)):
        folder = root / name
        if (folder / "adapter_config.json").is_file():
            found[name] = Checkpoint(name, folder, adapter=True)
        elif (folder / "config.json").is_file():
            found[name] = Checkpoint(name, folder)
    return found


def served_models(run: Run) -> dict[str, Checkpoint]:
    """Every model the generation deployment serves: base first, then the tuned conditions."""
    return {BASE: Checkpoint(BASE, None), **tuned_checkpoints(run)}


def weights_for_condition(condition: str, run: Run) -> str:
    """The served model whose weights score `condition` (icl -> base); KeyError if unknown."""
    if condition in BASE_WEIGHT_CONDITIONS:
        return BASE
    if condition in tuned_checkpoints(run):
        return condition
    raise KeyError(condition)


def load_checkpoint(cfg: RunConfig, checkpoint: Checkpoint, device: str = "cpu"):
    """Load a servable model in eval mode; a LoRA adapter is applied to the base and merged."""
    if checkpoint.path is None:
        return load_model(cfg.model, device=device)
    if not checkpoint.adapter:
        return load_model(cfg.model.model_copy(update={"ref": str(checkpoint.path)}), device=device)
    from peft import PeftModel

    base = load_model(cfg.model, device=device)
    try:
        merged = PeftModel.from_pretrained(base, str(checkpoint.path)).merge_and_unload()
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"{checkpoint.path}: cannot apply this LoRA adapter to {cfg.model.ref}: {err}") from None
    return merged.eval()
