"""The config tables serving/ reads (`[serving]`, `[review]`). Cheap to import: pydantic only."""

from __future__ import annotations

from typing import Annotated, Protocol

from pydantic import Field, field_validator

from features.config import PositiveInt, Probability, Section
from models.config import ModelsConfig


class ServingSection(Section):
    churn_band_thresholds: Annotated[list[Probability], Field(min_length=2, max_length=2)]
    explain_top_k: PositiveInt
    stale_after_days: PositiveInt

    @field_validator("churn_band_thresholds")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if value[0] > value[1]:
            raise ValueError(f"the low/medium threshold must not exceed the medium/high one, got {value}")
        return value


class ReviewSection(Section):
    history_cutoffs: PositiveInt
    history_step_days: PositiveInt
    top_users: PositiveInt
    recent_events: PositiveInt


class ServingConfig(ModelsConfig, Protocol):
    """What serving/ reads of the whole config (`clm.config_schema.ClmConfig` fits it)."""

    @property
    def serving(self) -> ServingSection: ...
    @property
    def review(self) -> ReviewSection: ...
