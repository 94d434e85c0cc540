"""The CLI's process settings: the shared `ProcessSettings` (CLM_* variables, then `clm.toml`, then defaults,
the same hierarchy `clm serve`'s `ServingSettings` reads) plus what only the command line uses."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serving.settings import ProcessSettings


class Settings(ProcessSettings):
    """Where things live and which components run; business parameters live in the config file instead."""

    timezone: str = Field("UTC", description="Time zone given to naive timestamps at ingest.")
    skip_services: bool = Field(False, description="Skip tests that need PostgreSQL/Redis (laptops only).")
    engine: Literal["duckdb", "spark"] = Field(
        "duckdb",
        description="Engine of `clm features build|materialize` and `clm score` (--engine overrides).",
    )
    spark_master: str = Field(
        "local[*]", description="Spark master: local[*], spark://HOST:7077, yarn, k8s://…"
    )
    spark_conf: list[str] = Field(
        default_factory=list, description='Extra Spark conf as key=value, e.g. ["spark.executor.memory=4g"].'
    )
