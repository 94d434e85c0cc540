"""The shape of the business config (clm/defaults.toml), as pydantic models.

Why a schema: the config is loaded once at each entry point (a CLI command, the server, the demo, a
notebook) and handed down as typed sections (`config.features`, `config.policy`, …) that the readers
take and read as attributes. Validating the merged file once turns a typo or a wrong type into one
error that names the key, instead of a silently ignored key or a traceback deep inside a training job.

Each layer owns the tables it reads (features.config, models.config, serving.config; `[training]` sits
in models.config so that the CLI need not import the training package); this module composes them and
adds the checks that span tables.

The defaults themselves live in defaults.toml only: every field here is required (the merged dict
always carries the shipped value), except the keys defaults.toml leaves commented out. Models are
strict (TOML is typed: "30" is not a number of days) and forbid unknown keys; open tables (the action
catalog, LightGBM parameters, plan prices) are `dict[str, …]` whose entries are still validated.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from features.config import (
    FeaturesSection,
    IngestSection,
    LabelsSection,
    Name,
    NonNegativeInt,
    PositiveInt,
    Section,
)
from models.config import (
    ActionSection,
    AnalyticsSection,
    LiftSection,
    ModelsSection,
    MonitorSection,
    Outcome,
    PolicySection,
    StagesSection,
    TrainingSection,
    ValueSection,
)
from serving.config import ReviewSection, ServingSection

__all__ = [
    "ActionSection",
    "AnalyticsSection",
    "ClmConfig",
    "FeaturesSection",
    "IngestSection",
    "LabelsSection",
    "LiftSection",
    "ModelsSection",
    "MonitorSection",
    "Outcome",
    "PolicySection",
    "ReviewSection",
    "Section",
    "ServingSection",
    "SimulationSection",
    "StagesSection",
    "TrainingSection",
    "ValueSection",
]


class SimulationSection(Section):
    horizon_days: PositiveInt
    value_horizon_months: PositiveInt
    margin_truth_cutoffs: NonNegativeInt


class ClmConfig(Section):
    """The whole business config, validated. `as_dict()` is its plain form (logged, digested)."""

    version: Name
    ingest: IngestSection
    features: FeaturesSection
    labels: LabelsSection
    simulation: SimulationSection
    training: TrainingSection
    models: ModelsSection
    stages: StagesSection
    value: ValueSection
    policy: PolicySection
    lift: LiftSection
    actions: Annotated[dict[str, ActionSection], Field(min_length=1)]
    serving: ServingSection
    review: ReviewSection
    monitor: MonitorSection
    analytics: AnalyticsSection

    @model_validator(mode="after")
    def _consistent_across_sections(self) -> ClmConfig:
        if "no_action" in self.actions:
            raise ValueError("actions.no_action is reserved (it is always a candidate, with value 0)")
        unpriced = [plan for plan in self.features.plan_order if plan not in self.value.plan_prices]
        if unpriced:
            raise ValueError(
                f"value.plan_prices has no price for the plan(s) {unpriced} of features.plan_order"
            )
        if self.features.no_subscription_plan not in self.features.plan_order:
            raise ValueError(
                f"features.no_subscription_plan {self.features.no_subscription_plan!r} is not in features.plan_order"
            )
        return self

    def section(self, name: str) -> Section:
        """One table by name (`config.section("features")`), for code that is handed a section name."""
        if name not in type(self).model_fields:
            raise KeyError(f"the config has no section {name!r}")
        return getattr(self, name)
