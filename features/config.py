"""The config tables features/ reads (`[ingest]`, `[features]`, `[labels]`), as pydantic models, and the
`Section` base every layer's tables share. `clm.config_schema.ClmConfig` composes them with the other
layers' tables; this module stays cheap to import (pydantic only) so `clm --help` does not pay for it."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
ProbabilityChange = Annotated[float, Field(ge=-1, le=1)]
Name = Annotated[str, Field(min_length=1)]
Names = list[Name]


class Section(BaseModel):
    """A table of the config: strict types, no unknown keys, immutable once loaded."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    def as_dict(self) -> dict[str, Any]:
        """The plain nested dict, exactly the keys that were given (optional keys left out stay out): what
        is logged with a run, hashed into the config digest and stored in a bundle's metadata."""
        return self.model_dump(exclude_unset=True)


class IngestSection(Section):
    timezone: Name
    non_negative_amount_event_types: Names
    duplicate_key: Annotated[Names, Field(min_length=1)]
    event_types: Names | None = None
    earliest_timestamp: Name  # an ISO date, kept as text so the config stays plain JSON
    max_days_after_run: NonNegativeFloat
    max_field_bytes: PositiveInt
    min_accepted_share: Probability

    @field_validator("earliest_timestamp")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected an ISO date such as '1970-01-01', got {value!r}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class FeaturesSection(Section):
    windows_days: Annotated[list[PositiveInt], Field(min_length=1)]
    trend_window_days: PositiveInt
    count_event_types: Names
    login_like_event_types: Names
    purchase_event_types: Names
    support_event_types: Names
    plan_change_event_types: Names
    cancel_event_types: Names
    plan_order: Annotated[Names, Field(min_length=1)]
    no_subscription_plan: Name
    bill_period_days: PositiveInt
    rfm_buckets: Annotated[int, Field(ge=2)]


class LabelsSection(Section):
    horizon_days: PositiveInt
    churn_definition: Literal["auto", "contractual", "non_contractual"]
    non_contractual_activity: Literal["any", "purchase"]
    upgrade_spend_threshold: NonNegativeFloat
    keep_churned_users: bool
