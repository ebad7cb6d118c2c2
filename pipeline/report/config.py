"""Config of the `report` stage."""

from __future__ import annotations

from pydantic import Field

from pipeline.section import Section


class ReportConfig(Section):
    plots: bool = Field(True, description="Write plots/*.png beside report.md.")
