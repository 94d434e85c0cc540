"""The API contract (DESIGN.md §4): request and response models. Field descriptions and examples feed
the OpenAPI document at /docs."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

FeatureValue = float | int | str | bool | None


class Stage(BaseModel):
    name: str = Field(description="new, growing, mature, at_risk, dormant or reactivated")
    rule: str = Field(description="The rule that fired, in words and as its expression")
    since: dt.date | None = Field(None, description="When the user entered the stage, when the features tell")


class Churn(BaseModel):
    probability: float = Field(
        ge=0, le=1, description="Calibrated probability of churning within the horizon"
    )
    band: Literal["low", "medium", "high"]


class Upgrade(BaseModel):
    probability: float = Field(ge=0, le=1)
    value: float | None = Field(
        None, description="Extra margin an upgrade to the next plan brings over the value horizon"
    )


class ChosenAction(BaseModel):
    name: str
    expected_value: float = Field(
        description="uplift × value − cost, in the config's currency; 0 for no_action"
    )
    uplift: float = Field(description="Estimated change in the probability of the outcome the action targets")
    cost: float
    channel: str | None
    source: str | None = Field(description='"model" (fitted on campaigns) or "prior" (configured effect)')
    propensity: float = Field(description="Probability the policy gave this action (exploration is random)")
    explored: bool


class Alternative(BaseModel):
    name: str
    status: str = Field(description="chosen, eligible, ineligible_stage, cooldown, contact_cap or harmful")
    expected_value: float
    uplift: float
    cost: float
    source: str
    reason: str


class Contribution(BaseModel):
    feature: str
    value: FeatureValue
    contribution: float = Field(description="TreeSHAP contribution to the raw score (log-odds)")
    reason: str


class Explanation(BaseModel):
    base_value: float = Field(description="The model's expected raw score; base + Σ all contributions = raw")
    raw_score: float
    top: list[Contribution]


class Versions(BaseModel):
    churn_model: str
    upgrade_model: str
    policy: str
    features: str


class Decision(BaseModel):
    user_id: str | None
    as_of: dt.date | None = Field(description="The feature snapshot's date (None for a posted vector)")
    stage: Stage
    churn: Churn
    upgrade: Upgrade
    clv: float
    action: ChosenAction
    alternatives: list[Alternative]
    explanations: dict[str, Explanation]
    versions: Versions
    decision_id: str
    missing_features: list[str] = Field(default_factory=list, description="Features treated as missing")


class DecisionRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"features": {"days_since_last_event": 12, "active_days_30d": 4, "current_plan": "basic",
                              "mrr": 12.0, "revenue_sum_90d": 30.0, "tenure_days": 200}},
                {"user_id": "u000042", "features": {"days_since_last_event": 40}},
            ]
        },
    )  # fmt: skip

    user_id: str | None = Field(
        None, max_length=200, description="Stored features to start from (overridden by `features`)"
    )
    features: dict[str, FeatureValue] = Field(
        default_factory=dict, description="Feature name → value; absent features are missing values"
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"items": [{"user_id": "u000042"}, {"features": {"tenure_days": 3}}]}]
        },
    )
    items: list[DecisionRequest] = Field(min_length=1)


class BatchItem(BaseModel):
    decision: Decision | None = None
    error: dict | None = Field(None, description="status and detail when this item could not be decided")


class BatchResponse(BaseModel):
    items: list[BatchItem]


class OutcomeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"decision_id": "3f2a…", "action_taken": "recommendation", "outcome": "retained",
                          "ts": "2026-11-20T10:00:00Z", "value": 12.0}]
        },
    )  # fmt: skip
    decision_id: str = Field(min_length=1, max_length=64)
    action_taken: str = Field(min_length=1, max_length=100)
    outcome: str = Field(
        min_length=1, max_length=100, description="e.g. retained, churned, upgraded, converted"
    )
    ts: AwareDatetime = Field(description="When the outcome happened, with its time zone")
    value: float | None = Field(None, allow_inf_nan=False)


class OutcomeResponse(BaseModel):
    decision_id: str
    outcome: str
    status: Literal["recorded", "duplicate"]


class ModelsResponse(BaseModel):
    alias: str
    versions: Versions
    shadow: Versions | None
    loaded_at: dt.datetime
    store: dict


class ReloadResponse(BaseModel):
    reloaded: bool
    versions: Versions
