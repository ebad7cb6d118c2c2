"""Config of the `augment` stage."""

from __future__ import annotations

from pydantic import Field

from pipeline.section import ModelConfig, Section


class AugmentConfig(Section):
    generator: ModelConfig = Field(default_factory=ModelConfig, description="The model that writes the augmentations (may differ from the model under study).")
    samples_per_sentence: int = Field(1, gt=0, description="Local augmentation: generations per training sentence.")
