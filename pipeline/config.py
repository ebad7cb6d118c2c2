"""Run configuration: YAML -> validated, typed objects -> saved beside the outputs.

Every section is a pydantic model with a description per field and `extra="forbid"`, so an
unknown key, a wrong type or an impossible combination is an error that names the key and the
file. `--set a.b=value` overrides any key before validation. The resolved config is written to
`<output_dir>/<name>/config.yaml` before any stage runs.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from pipeline.augment.config import AugmentConfig
from pipeline.conditions import CONDITIONS, DEFAULT_CONDITIONS, FT_STRATEGIES, GENERATOR_ICL
from pipeline.evaluate.config import EvaluateConfig
from pipeline.report.config import ReportConfig
from pipeline.section import ModelConfig, Section
from pipeline.train.config import TrainConfig
from pipeline.data.config import DataConfig
from serve.config import ServeConfig

class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


class RayConfig(Section):
    address: str | None = Field(
        None,
        description="Ray cluster to join ('auto' under `ray job submit`); default: start a local "
        "one, or join the one in RAY_ADDRESS.",
    )
    num_cpus: int | None = Field(
        None, gt=0, description="CPUs of a locally started cluster; default: all of this machine."
    )
    gpu_wait_s: float = Field(
        600, ge=0, description="How long a stage that asks for GPUs waits for the autoscaler to add them "
        "(a cluster that scales from zero) before it fails; it never falls back to CPU.",
    )


class RunConfig(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name: outputs go to <output_dir>/<name>/.")
    output_dir: str = Field(
        "runs", description="Where run folders live: a local folder (relative: from the directory the command runs "
        "in) or a URI every node can reach (s3://BUCKET/runs, gs://..., file:///shared/runs).",
    )
    seed: int = Field(0, description="Seed for data generation, sampling and training.")
    conditions: list[str] = Field(
        list(DEFAULT_CONDITIONS),
        description=f"Conditions to compare, any subset of {', '.join(CONDITIONS)}; default: all but {GENERATOR_ICL} "
        "(the augmentation generator's ICL, for a run whose augment.generator is another model).",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model under study.")
    data: DataConfig = Field(default_factory=DataConfig, description="Knowledge sets (worlds) and the user's corpus.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="ICL augmentation of the training corpus.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning (Ray Train + DeepSpeed).")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Likelihood evaluation of every condition.")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Report, plots and cost model.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="Ray Serve application for a finished run.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Where Ray runs.")

    @model_validator(mode="after")
    def _check_conditions(self) -> "RunConfig":
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            raise ValueError(f"conditions: unknown condition {unknown[0]!r}; choose from {list(CONDITIONS)}")
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError("conditions: a condition is listed twice")
        if not self.conditions:
            raise ValueError("conditions: list at least one condition")
        scheme, sep, rest = self.output_dir.partition("://")
        if sep and not rest.strip("/"):
            raise ValueError(f"output_dir: {self.output_dir!r} names no bucket or folder; e.g. {scheme}://BUCKET/runs")
        caps = self.augment.oracle_max_per_world
        for world in caps if isinstance(caps, dict) else ():
            if world not in self.data.enabled():
                raise ValueError(f"augment.oracle_max_per_world: {world!r} is not a world of this run; "
                                 f"its worlds: {self.data.enabled()}")
        if "generator" not in self.augment.model_fields_set:
            # the model under study writes its own augmentations unless another is configured
            self.augment.generator = self.model.model_copy()
        if GENERATOR_ICL in self.conditions and self.augment.generator == self.model:
            raise ValueError(f"conditions: {GENERATOR_ICL!r} scores augment.generator in context, but the generator is "
                             f"the model under study ({self.model.ref!r}): its ICL is the 'icl' condition; set "
                             "augment.generator.ref to another model or drop the condition")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def ft_conditions(self) -> list[str]:
        return [c for c in self.conditions if c in FT_STRATEGIES]

    def strategies(self) -> list[str]:
        """Augmentation strategies the configured conditions need, in a fixed order."""
        needed = {s for c in self.ft_conditions() for s in FT_STRATEGIES[c]}
        return [s for s in ("local", "global", "oracle") if s in needed]


# ---------------------------------------------------------------- loading, overrides, saving


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` to a raw config dict; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: empty key part in {key!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value {text!r} is not valid YAML ({err})") from None
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:depth + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key" + _suggest(e["loc"])
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg += f" (got {e.get('input')!r})" if e["type"] != "value_error" else ""
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def _suggest(loc: tuple) -> str:
    """'; did you mean X?' for a misspelt key, looked up in the section's fields."""
    model: Any = RunConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return ""
        model = field.annotation
    match = difflib.get_close_matches(str(loc[-1]), list(getattr(model, "model_fields", {})), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML file, apply `--set` overrides, validate. Errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate_config(raw, str(path))


def validate_config(raw: dict, source: str = "<config>") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def config_to_dict(cfg: RunConfig) -> dict:
    return cfg.model_dump(mode="json")


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


#: Sections that change how a run executes, not what it computes; they may differ on re-run.
RUNTIME_SECTIONS = ("ray", "serve")


def differing_keys(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two config dicts, runtime-only sections aside."""
    a, b = flatten(old), flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>"))
    return [k for k in keys if k.split(".")[0] not in RUNTIME_SECTIONS]
