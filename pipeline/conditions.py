"""The conditions a run compares, how they are shown, and the one way to load a condition's model.

- `base`: the run's model, the item's prompt alone.
- `icl`: the run's model with the training documents as a context before every item
  (built in `pipeline.evaluate.icl`).
- `icl-generator`: the augmentation generator (`augment.generator`, when it is another model)
  with the same documents in context, so a report shows the ICL its augmentations drew on; scored
  offline only (the Serve evaluator serves the run's model and its tuned folders).
- every FT condition: the folder `<run>/models/<condition>/` written by `train`: a full HF folder
  (config.json + safetensors) or a LoRA adapter (adapter_config.json) applied to the run's model
  and merged.
- `evaluate.checkpoints`: extra named folders, scored and served like FT conditions.

Evaluate, report and serve all use this module; it imports nothing of theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline import models, storage
from pipeline.models import ModelError
from pipeline.section import ModelConfig
from pipeline.storage import AnyPath

if TYPE_CHECKING:
    from pipeline.config import RunConfig
    from pipeline.runs import Run

#: Every condition a run can compare, in report order.
CONDITIONS = ("base", "icl", "icl-generator", "ft", "ft+local", "ft+global", "ft+local+global", "ft+oracle")
#: The generator's ICL: only where the augmentations are written by another model than the one studied.
GENERATOR_ICL = "icl-generator"
#: A config's conditions when it names none: every condition of the model under study.
DEFAULT_CONDITIONS = tuple(c for c in CONDITIONS if c != GENERATOR_ICL)
#: Conditions scored with the training documents as a context.
ICL_CONDITIONS = ("icl", GENERATOR_ICL)
#: Fine-tuning conditions and the augmentation strategies each trains on.
FT_STRATEGIES = {
    "ft": (),
    "ft+local": ("local",),
    "ft+global": ("global",),
    "ft+local+global": ("local", "global"),
    "ft+oracle": ("oracle",),
}
#: Conditions scored with the run model's own weights (ICL adds the corpus as a prefix).
BASE_WEIGHT_CONDITIONS = ("base", "icl")
#: One colour per condition, stable across plots (ICL and augmented FT stand out).
COLOURS = {
    "base": "#9e9e9e", "icl": "#1f77b4", "icl-generator": "#aec7e8", "ft": "#ff7f0e", "ft+local": "#2ca02c",
    "ft+global": "#98df8a", "ft+local+global": "#17becf", "ft+oracle": "#9467bd",
}

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class ConditionError(ValueError):
    """A condition that cannot be scored: not configured, not trained yet, or an ICL context too long."""


def report_order(names) -> list[str]:
    """Built-in conditions in report order, then any other names alphabetically."""
    rank = {c: i for i, c in enumerate(CONDITIONS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


@dataclass(frozen=True)
class ConditionSpec:
    """Everything a scorer or server needs to build a condition (picklable, no tensors)."""

    name: str
    model: ModelConfig  # the run's model, or the condition's folder
    base: ModelConfig  # the run's model: the base of a LoRA adapter
    adapter: bool = False
    contexts: tuple[tuple[str, str], ...] = ()  # (world, ICL prefix text); empty: no prefix

    @property
    def folder(self) -> AnyPath | None:
        """The condition's own folder (local, or in run storage); None when it scores with the run
        model's weights."""
        return None if self.model == self.base else storage.location(self.model.ref)


def folder_spec(name: str, base: ModelConfig, folder: AnyPath, what: str) -> ConditionSpec:
    """A condition whose model is `folder` (full model or adapter; a local folder or one in run
    storage, which each node that loads it fetches once into its cache, see
    `pipeline.models.fetch_folder`); checked before anything loads."""
    adapter = models.check_model_folder(folder, what)
    return ConditionSpec(name, base.model_copy(update={"ref": str(folder.resolve())}), base, adapter=adapter)


def condition_names(cfg: RunConfig) -> list[str]:
    """The configured conditions, then the extra checkpoints, in that order."""
    return list(cfg.conditions) + list(cfg.evaluate.checkpoints)


def condition_spec(cfg: RunConfig, run: Run, name: str, contexts: dict | None = None) -> ConditionSpec:
    """Where condition `name` gets its model; `contexts` (world -> IclContext) for `icl` and `icl-generator`."""
    ctx = tuple((w, c.text) for w, c in sorted((contexts or {}).items())) if name in ICL_CONDITIONS else ()
    if name == GENERATOR_ICL:
        return ConditionSpec(name, cfg.augment.generator, cfg.augment.generator, contexts=ctx)
    if name in BASE_WEIGHT_CONDITIONS:
        return ConditionSpec(name, cfg.model, cfg.model, contexts=ctx)
    if name in FT_STRATEGIES:
        path = run.path("models", name)
        if not path.is_dir():
            raise ConditionError(f"condition {name!r}: {path}: no model; run `python -m pipeline train CONFIG` first")
        return folder_spec(name, cfg.model, path, f"condition {name!r}")
    if name in cfg.evaluate.checkpoints:
        path = storage.location(cfg.evaluate.checkpoints[name])
        return folder_spec(name, cfg.model, path, f"evaluate.checkpoints.{name}")
    raise ConditionError(f"condition {name!r}: not a configured condition or checkpoint")


def context_window(spec: ConditionSpec) -> int:
    """The context window of a condition's model (an adapter's is its base's)."""
    return models.context_window(spec.base if spec.adapter else spec.model)


def load_condition_tokenizer(spec: ConditionSpec):
    """The folder's own tokenizer if it has one, else the run model's."""
    own = spec.folder is not None and any((spec.folder / f).is_file() for f in _TOKENIZER_FILES)
    return models.load_tokenizer(spec.model if own else spec.base)


def load_condition_model(spec: ConditionSpec, device: str = "cpu"):
    """(model, tokenizer) of a condition, in eval mode; an adapter is merged into its base."""
    tokenizer = load_condition_tokenizer(spec)
    if not spec.adapter:
        return models.load_model(spec.model, device=device), tokenizer
    from peft import PeftModel

    base = models.load_model(spec.base, device=device)
    try:
        folder = models.fetch_folder(spec.folder) if storage.is_remote(spec.folder) else spec.folder
        merged = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelError(f"{spec.folder}: cannot apply this LoRA adapter to {spec.base.ref}: {err}") from None
    return merged.eval(), tokenizer
