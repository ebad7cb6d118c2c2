"""Config of the `train` stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.section import Section


class TrainConfig(Section):
    sentence_split: Literal["independent", "cumulative", "none"] = Field(
        "independent", description="How a multi-sentence document becomes training examples."
    )
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    batch_size: int = Field(8, gt=0, description="Global batch size in examples.")
    epochs: int = Field(1, gt=0, description="Passes over the training examples.")
