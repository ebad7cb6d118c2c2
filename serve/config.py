"""Config of the Ray Serve application (the `serve` section of a run config)."""

from __future__ import annotations

from pydantic import Field

from pipeline.section import Section


class ServeConfig(Section):
    host: str = Field("127.0.0.1", description="Address the HTTP proxy binds; 127.0.0.1 keeps it local.")
    port: int = Field(8000, gt=0, lt=65536, description="HTTP port.")
