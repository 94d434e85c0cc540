"""The shape of the business config (clm/defaults.toml), as pydantic models.

Why a schema: the config is read by 68 `config["section"]["key"]` look-ups spread over features/,
models/, training/ and serving/, and each used to cast and check what it read (or not). Validating
the merged file once, at the entry point, turns a typo or a wrong type into one error that names the
key, instead of a silently ignored key or a traceback deep inside a training job.

The defaults themselves live in defaults.toml only: every field here is required (the merged dict
always carries the shipped value), except the keys defaults.toml leaves commented out. Models are
strict (TOML is typed: "30" is not a number of days) and forbid unknown keys; open tables (the action
catalog, LightGBM parameters, plan prices) are `dict[str, …]` whose entries are still validated.
"""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Kept here rather than imported from models/ so that reading the config stays cheap (`clm --help`);
# tests/clm/test_config_schema.py checks that they agree with models.catalog / models.stages.
Stage = Literal["new", "growing", "mature", "at_risk", "dormant", "reactivated"]
Outcome = Literal["retention", "upgrade"]

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
ProbabilityChange = Annotated[float, Field(ge=-1, le=1)]
Name = Annotated[str, Field(min_length=1)]
Names = list[Name]
LightGBMValue = bool | int | float | str


class Section(BaseModel):
    """A table of the config: strict types, no unknown keys, immutable once loaded."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    def as_dict(self) -> dict[str, Any]:
        """The plain nested dict, exactly the keys that were given (optional keys left out stay out): what
        the `config["section"]["key"]` call sites and the `from_config(section)` readers take."""
        return self.model_dump(exclude_unset=True)


class IngestSection(Section):
    timezone: Name
    non_negative_amount_event_types: Names
    duplicate_key: Annotated[Names, Field(min_length=1)]
    event_types: Names | None = None

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


class SimulationSection(Section):
    horizon_days: PositiveInt


class TrainingSection(Section):
    experiment: Name
    first_cutoff_after_days: NonNegativeInt
    backtest_folds: PositiveInt
    seed: NonNegativeInt
    shap_sample_rows: PositiveInt
    promotion_metric: Name
    promotion_tolerance: NonNegativeFloat
    calibration_tolerance: NonNegativeFloat


class PropensityModelSection(Section):
    """`[models.churn]`, `[models.upgrade]` and `[models.reactivation]`: one LightGBM propensity model each."""

    registered_name: Name
    monotone: bool
    calibration_prior_rows: NonNegativeFloat
    num_boost_round: PositiveInt
    early_stopping_rounds: PositiveInt
    params: dict[str, LightGBMValue]


class PolicyModelSection(Section):
    registered_name: Name
    promotion_metric: Name
    promotion_tolerance: NonNegativeFloat


class ModelsSection(Section):
    churn: PropensityModelSection
    upgrade: PropensityModelSection
    reactivation: PropensityModelSection
    policy: PolicyModelSection


class StageRule(Section):
    stage: Stage
    description: str
    when: Name
    since_days: Name | None = None


class StagesSection(Section):
    """The rules' expressions are compiled (and their feature names checked) by models.stages, which
    knows the feature registry; here only their shape is checked."""

    default_stage: Stage
    default_description: str
    rules: list[StageRule]


class ValueSection(Section):
    margin_share: Probability
    discount_rate_annual: NonNegativeFloat
    horizon_months: PositiveInt
    revenue_window_days: PositiveInt
    currency: Name
    retained_churn_month: Annotated[float, Field(ge=0, lt=1)]
    plan_prices: dict[str, NonNegativeFloat]


class PolicySection(Section):
    max_contacts_per_30d: NonNegativeInt
    harm_tolerance: Probability
    exploration_share: Annotated[float, Field(ge=0, lt=1)]
    exploration_salt: str
    min_treated_rows: NonNegativeInt
    min_treated_positives: NonNegativeInt
    learner: Literal["t", "x"]
    seed: NonNegativeInt
    outcome_offset_days: NonNegativeInt
    shrinkage: bool
    prior_sd: Annotated[float, Field(gt=0)]
    heterogeneity_rows: NonNegativeInt
    budget_method: Literal["lagrangian", "greedy"]
    evaluation_budget_share: Annotated[float, Field(gt=0, le=1)]
    top_risk_share: Annotated[float, Field(gt=0, le=1)]
    lightgbm: dict[str, LightGBMValue]


class ActionSection(Section):
    """One `[actions.NAME]` entry of the catalog (the catalog itself is open: any name but `no_action`)."""

    stages: Annotated[list[Stage], Field(min_length=1)]
    cost: NonNegativeFloat
    channel: Name
    cooldown_days: NonNegativeInt
    outcome: Outcome
    prior_delta_churn: ProbabilityChange
    prior_delta_upgrade: ProbabilityChange
    prior_delta_reactivation: ProbabilityChange | None = None


class ServingSection(Section):
    churn_band_thresholds: Annotated[list[Probability], Field(min_length=2, max_length=2)]
    explain_top_k: PositiveInt

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


class ClmConfig(Section):
    """The whole business config, validated. `as_dict()` is the plain dict `load_config` returns."""

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
    actions: Annotated[dict[str, ActionSection], Field(min_length=1)]
    serving: ServingSection
    review: ReviewSection

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
