"""The config tables models/ reads (`[models.*]`, `[stages]`, `[value]`, `[policy]`, `[actions.*]`) and
`[training]` (kept here, one layer down, because both training/ and the CLI read it and importing the
training package is what `clm --help` must avoid). Cheap to import: pydantic and features.config only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, model_validator

from features.config import (
    FeaturesSection,
    LabelsSection,
    Name,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Probability,
    ProbabilityChange,
    Section,
)

# Spelled out here rather than imported from models.catalog / models.stages so that reading the config
# stays cheap; tests/clm/test_config_schema.py checks that they agree.
Stage = Literal["new", "growing", "mature", "at_risk", "dormant", "reactivated"]
Outcome = Literal["retention", "upgrade"]
LightGBMValue = bool | int | float | str


class TrainingSection(Section):
    experiment: Name
    first_cutoff_after_days: Literal["auto"] | NonNegativeInt
    cutoff_cadence: Literal["auto", "daily", "weekly", "monthly"] | PositiveInt
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
    promotion_minimum: float | None = None


class ModelsSection(Section):
    churn: PropensityModelSection
    upgrade: PropensityModelSection
    reactivation: PropensityModelSection
    policy: PolicyModelSection

    def propensity(self, target: str) -> PropensityModelSection:
        """The table of one propensity target ("churn", "upgrade" or "reactivation")."""
        if target not in ("churn", "upgrade", "reactivation"):
            raise KeyError(f"no propensity model {target!r} in the config (churn, upgrade, reactivation)")
        return getattr(self, target)

    def registered_name(self, target: str) -> str:
        """The registered model name of "churn", "upgrade", "reactivation" or "policy"."""
        return self.policy.registered_name if target == "policy" else self.propensity(target).registered_name


class StageRuleSection(Section):
    stage: Stage
    description: str
    # The description in Chinese (`?lang=zh`); a policy saved before there was one reads the English.
    description_zh: str = ""
    when: Name
    since_days: Name | None = None


class StagesSection(Section):
    """The rules' expressions are compiled (and their feature names checked) by models.stages, which
    knows the feature registry; here only their shape is checked."""

    default_stage: Stage
    default_description: str
    default_description_zh: str = ""
    rules: list[StageRuleSection]


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
    control_share: Annotated[float, Field(ge=0, lt=1)]
    control_salt: str
    contact_windows_days: Annotated[list[PositiveInt], Field(min_length=1)]
    negative_outcome_days: PositiveInt
    negative_outcomes_retention: NonNegativeInt
    negative_outcomes_upgrade: NonNegativeInt
    negative_outcome_names_retention: list[Name]
    negative_outcome_names_upgrade: list[Name]
    min_treated_rows: NonNegativeInt
    min_treated_positives: NonNegativeInt
    learner: Literal["t", "x"]
    seed: NonNegativeInt
    outcome_offset_days: NonNegativeInt
    shrinkage: bool
    prior_sd: Annotated[float, Field(gt=0)]
    heterogeneity_rows: NonNegativeInt
    baseline_share: Probability
    budget_method: Literal["lagrangian", "greedy"]
    evaluation_budget_share: Annotated[float, Field(gt=0, le=1)]
    top_risk_share: Annotated[float, Field(gt=0, le=1)]
    lightgbm: dict[str, LightGBMValue]


class LiftSection(Section):
    """`[lift]`: how measured lift (models/lift.py, `clm lift`) reads decisions and their outcomes."""

    horizon_days: PositiveInt
    confidence: Annotated[float, Field(gt=0.5, lt=1)]
    min_users: NonNegativeInt
    churn_outcomes: list[Name]
    return_outcomes: list[Name]
    upgrade_outcomes: list[Name]

    def outcome_names(self) -> dict[str, list[str]]:
        """Measure (churn, return, upgrade) → the outcome names that count as it."""
        return {
            "churn": self.churn_outcomes,
            "return": self.return_outcomes,
            "upgrade": self.upgrade_outcomes,
        }


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
    # the action's own cap: at most `max_contacts` contacts of it in the last `max_contacts_window_days` days
    max_contacts: PositiveInt | None = None
    max_contacts_window_days: PositiveInt | None = None

    @model_validator(mode="after")
    def _cap_with_its_window(self) -> ActionSection:
        if (self.max_contacts is None) != (self.max_contacts_window_days is None):
            raise ValueError("max_contacts and max_contacts_window_days go together: give both or neither")
        return self


class MonitorSection(Section):
    """`[monitor]`: when drift between the training snapshot and the current one is a breach (models.drift)."""

    psi: NonNegativeFloat
    p_value: Probability
    missing_rate_change: Probability
    bins: Annotated[int, Field(ge=2)]
    min_rows: PositiveInt
    score_psi: NonNegativeFloat
    stage_share_change: Probability
    action_share_change: Probability
    lift_min_users: PositiveInt


class AnalyticsSection(Section):
    """`[analytics]`: the lifecycle analytics of the report and the reviewer overview (models.lifecycle)."""

    next_stages: dict[Stage, Annotated[list[Stage], Field(min_length=1)]]
    value_split_quantile: Annotated[float, Field(gt=0, lt=1)]
    tenure_split_quantile: Annotated[float, Field(gt=0, lt=1)]
    underserved_value_quantile: Annotated[float, Field(gt=0, lt=1)]
    referral_channel: Name


class ModelsConfig(Protocol):
    """What models/ and training/ read of the whole config: the tables below them and their own.
    `clm.config_schema.ClmConfig` fits it; the protocol lets a job take the one typed config without
    importing clm/ (the layering of DESIGN.md §3)."""

    @property
    def features(self) -> FeaturesSection: ...
    @property
    def labels(self) -> LabelsSection: ...
    @property
    def training(self) -> TrainingSection: ...
    @property
    def models(self) -> ModelsSection: ...
    @property
    def stages(self) -> StagesSection: ...
    @property
    def value(self) -> ValueSection: ...
    @property
    def policy(self) -> PolicySection: ...
    @property
    def actions(self) -> Mapping[str, ActionSection]: ...
    @property
    def monitor(self) -> MonitorSection: ...
    @property
    def analytics(self) -> AnalyticsSection: ...
    def as_dict(self) -> dict[str, Any]: ...
