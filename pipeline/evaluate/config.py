"""Config of the `evaluate` stage."""

from __future__ import annotations

from pydantic import Field

from pipeline.section import Section


class EvaluateConfig(Section):
    batch_size: int = Field(16, gt=0, description="Items scored per forward batch.")
    num_actors: int = Field(1, gt=0, description="Scorer actors in the Ray Data pool (GPU: one per GPU).")
