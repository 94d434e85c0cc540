"""The CLI's process settings: the shared `ProcessSettings` (CLM_* variables, then `clm.toml`, then defaults,
the same hierarchy `clm serve`'s `ServingSettings` reads) plus what only the command line uses."""

from __future__ import annotations

from pydantic import Field

from serving.settings import ProcessSettings


class Settings(ProcessSettings):
    """Where things live and which components run; business parameters live in the config file instead."""

    timezone: str = Field("UTC", description="Time zone given to naive timestamps at ingest.")
    skip_services: bool = Field(False, description="Skip tests that need PostgreSQL/Redis (laptops only).")
