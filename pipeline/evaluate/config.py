"""Config of the `evaluate` stage: batching, the scorer actor pool, the ICL context, extra checkpoints."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from pipeline.conditions import CONDITIONS
from pipeline.section import Section

DEFAULT_INSTRUCTION = (
    "Below are documents about a made-up world. Read them, then complete the statement that "
    "follows using the facts they state and what can be inferred from those facts."
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class IclConfig(Section):
    instruction: str = Field(DEFAULT_INSTRUCTION, min_length=1, description="Instruction placed before the training documents.")
    chat_template: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Wrap instruction + documents as a user turn of the tokenizer's chat template (the "
        "statement is then the assistant's reply). auto: when the tokenizer has a template.",
    )
    doc_fraction: float = Field(
        1.0, gt=0, le=1,
        description="Keep this seeded random fraction of each world's training documents (the paper "
        "used 1/8 on its largest sets); 1 keeps all.",
    )
    overflow: Literal["error", "subsample", "truncate"] = Field(
        "error",
        description="When a world's context does not fit the model's window: error (stating both "
        "lengths), subsample (drop seeded random documents until it fits) or truncate (drop "
        "documents from the end).",
    )


class EvaluateConfig(Section):
    batch_size: int = Field(16, gt=0, description="Sequences (one per item choice) per forward pass.")
    num_actors: int | None = Field(
        None, gt=0, description="Scorer actors in the Ray Data pool; default: one per GPU on a GPU cluster, else 1."
    )
    threads_per_actor: int | None = Field(
        None, gt=0, description="torch threads (and Ray CPUs) per CPU scorer actor; default: the cluster's CPUs / actors."
    )
    use_gpu: bool | None = Field(None, description="Score on GPUs (one per actor); default: when the cluster has GPUs.")
    checkpoints: dict[str, str] = Field(
        {}, description="Extra models to score beside the conditions: name -> HF folder (full model or LoRA adapter)."
    )
    icl: IclConfig = Field(default_factory=IclConfig, description="How the ICL condition builds its context.")
    contamination_margin: float = Field(
        0.1, ge=0, le=1, description="The base condition is flagged when its accuracy exceeds chance by more than this ..."
    )
    contamination_z: float = Field(
        3.0, ge=0, description="... and by more than this many binomial standard errors at chance."
    )

    @field_validator("checkpoints")
    @classmethod
    def _check_checkpoints(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not _NAME.match(name):
                raise ValueError(f"checkpoint name {name!r}: use letters, digits and _ . + - (it names a file)")
            if name in CONDITIONS:
                raise ValueError(f"checkpoint name {name!r} is a built-in condition; choose another name")
            if not path.strip():
                raise ValueError(f"checkpoint {name!r}: empty path")
        return value
