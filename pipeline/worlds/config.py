"""Config of the `data` stage: which knowledge sets (worlds) to build, and at what size."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.section import Section


class WorldSize(Section):
    size: Literal["demo", "paper"] = Field("demo", description="Preset size: 'demo' (fast on CPU) or 'paper' (the paper's scale).")


class DataConfig(Section):
    reversals: WorldSize | None = Field(None, description="Simple reversals world; omit to leave it out.")
    syllogisms: WorldSize | None = Field(None, description="Simple syllogisms world; omit to leave it out.")
    semantic: WorldSize | None = Field(None, description="Semantic-structure world; omit to leave it out.")
    families: WorldSize | None = Field(None, description="Family-trees world; omit to leave it out.")
