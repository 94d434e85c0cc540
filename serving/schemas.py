"""The API contract (DESIGN.md §4): request and response models. Field descriptions and examples feed
the OpenAPI document at /docs."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

FeatureValue = float | int | str | bool | None
# Ids, outcome and action names: no NUL or other control characters (they would reach logs and SQL text)
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"


class Stage(BaseModel):
    name: str = Field(description="new, growing, mature, at_risk, dormant or reactivated")
    rule: str = Field(
        description="The rule that fired, in words and as its expression, in the language asked for "
        "(`?lang=zh`: the stage's Chinese name and the rule's `description_zh`)"
    )
    since: dt.date | None = Field(None, description="When the user entered the stage, when the features tell")


class Churn(BaseModel):
    probability: float = Field(
        ge=0, le=1,
        description="Calibrated probability of churning within the horizon; for a lapsed user scored by the "
        "reactivation model, 1 − return_probability",
    )  # fmt: skip
    band: Literal["low", "medium", "high"]
    scored_by: str = Field(
        description="The registered model that gave this probability: the churn model for users of its training "
        "population, the reactivation model (e.g. clm-reactivation/1) for lapsed users"
    )
    return_probability: float | None = Field(
        None, ge=0, le=1, description="Lapsed users: calibrated probability of coming back within the horizon"
    )
    note: str | None = Field(None, description="Set when a lapsed user had to be scored by the churn model")


class Upgrade(BaseModel):
    probability: float = Field(ge=0, le=1)
    value: float | None = Field(
        None,
        description="Upgrade value, in `currency`: margin of the next plan's extra price over the value horizon "
        "at the retained users' survival (0 on the top plan)",
    )


class Value(BaseModel):
    currency: str = Field(
        description="The currency of every money field of this decision (config value.currency)"
    )
    value_if_retained: float = Field(
        description="What the user is worth if retained or won back, in `currency`: margin if retained × "
        "Σ_t (1 − q)^t / (1 + r)^t over the value horizon, q the monthly churn of retained users on the same plan; "
        "not shrunk by the user's own churn probability"
    )
    margin_if_retained_month: float = Field(
        description="margin_share × (max(MRR, latest subscription MRR) + max(window, lifetime) purchases per 30 "
        "days), in `currency` per month"
    )
    retained_churn_month: float = Field(description="q: monthly churn of retained users on the same plan")
    upgrade_value: float = Field(description="Same as upgrade.value, in `currency`")
    clv: float = Field(
        description="margin now × the user's own survival annuity, in `currency`: the user as they are; "
        "no term of an action's value"
    )


class ValueTerms(BaseModel):
    """Every term of a candidate's expected value; they add up exactly."""

    stay_outcome: Literal["churn", "reactivation"] = Field(
        description='"churn": Δp(stay) = −Δchurn (churn model users); "reactivation": Δp(return) for lapsed users'
    )
    delta_stay: float = Field(
        description="Estimated change in the probability to stay (or come back) if contacted"
    )
    delta_stay_se: float = Field(
        description="Standard error of delta_stay (the action's shrunk average effect)"
    )
    delta_stay_source: str = Field(
        description='"model" (fitted on campaigns), "prior" (configured) or "definition"'
    )
    delta_upgrade: float = Field(description="Estimated change in the upgrade probability if contacted")
    delta_upgrade_se: float = Field(description="Standard error of delta_upgrade")
    delta_upgrade_source: str = Field(description='"model", "prior" or "definition"')
    value_if_retained: float = Field(description="In `currency` (see value.value_if_retained)")
    upgrade_value: float = Field(description="In `currency` (see upgrade.value)")
    retention_value: float = Field(description="delta_stay × value_if_retained, in `currency`")
    upgrade_gain: float = Field(description="delta_upgrade × upgrade_value, in `currency`")
    cost: float = Field(description="Cost of one contact, in `currency`")
    expected_value: float = Field(
        description="retention_value + upgrade_gain − cost = Δp(stay or return) × value_if_retained + "
        "Δp(upgrade) × upgrade_value − cost, in `currency`; 0 for no_action"
    )
    source: str = Field(
        description='Source of the effect on the outcome the action targets: "model" or "prior"'
    )


class ChosenAction(ValueTerms):
    name: str
    channel: str | None
    propensity: float = Field(
        description="Probability the policy gave this action, holdouts included: c·[no_action] + (1 − c)·"
        "((1 − ε)·[greedy] + ε/K), c the control share; the exploration draw is a hash of (user, snapshot "
        "date, policy version, salt), so the same request gets the same"
    )
    explored: bool
    control_group: bool = Field(
        False,
        description="The user is in the global control group: held out from all contact, chosen by a hash of "
        "(user, policy.control_salt) — the same users in every snapshot, worker and replay — with share "
        "policy.control_share (5 %); `name` is then no_action and `intended_action` what the policy meant",
    )
    holdout: Literal["control_group", "exploration"] | None = Field(
        None,
        description="Why a user the policy would have contacted gets no contact: the control group, or an "
        "exploration draw of no_action over the best action (that action's random holdout); None otherwise",
    )
    intended_action: str | None = Field(
        None,
        description="The action the policy chose before the control group held the user out (else `name`)",
    )


class Alternative(ValueTerms):
    name: str
    status: str = Field(
        description="chosen, eligible, ineligible_stage, cooldown, contact_cap, harmful, control_group or "
        "suppressed (paused after [policy] negative_outcomes_retention or negative_outcomes_upgrade negative "
        "outcomes of this action)"
    )
    reason: str = Field(
        description="Why chosen or not, in the language asked for; amounts in `value.currency`"
    )


class Contribution(BaseModel):
    feature: str
    value: FeatureValue
    contribution: float = Field(description="TreeSHAP contribution to the raw score (log-odds)")
    reason: str = Field(
        description="The value in plain words, in the language asked for; money in `value.currency`"
    )


class Explanation(BaseModel):
    base_value: float = Field(description="The model's expected raw score; base + Σ all contributions = raw")
    raw_score: float
    top: list[Contribution]


class Versions(BaseModel):
    churn_model: str
    upgrade_model: str
    reactivation_model: str | None = Field(None, description="None when none is registered")
    policy: str
    features: str


class Snapshot(BaseModel):
    """How old the features behind the decision are (models.snapshot)."""

    date: dt.date = Field(description="The feature snapshot's date (the same as `as_of`)")
    age_days: int = Field(
        description="Whole days from the snapshot's date to the day the decision was made (UTC)"
    )
    stale_after_days: int = Field(description="The configured limit (config serving.stale_after_days)")
    stale: bool = Field(
        description="age_days > stale_after_days: the user's activity since is not in the features"
    )
    warning: str | None = Field(
        None, description="What to do about a stale snapshot (None when it is not stale)"
    )


class Decision(BaseModel):
    user_id: str | None
    as_of: dt.date | None = Field(description="The feature snapshot's date (None for a posted vector)")
    stage: Stage
    churn: Churn
    upgrade: Upgrade
    clv: float = Field(description="Same as value.clv, in `currency`")
    value: Value
    action: ChosenAction
    alternatives: list[Alternative]
    explanations: dict[str, Explanation]
    versions: Versions
    decision_id: str
    missing_features: list[str] = Field(default_factory=list, description="Features treated as missing")
    # Last, so that a cached body's snapshot age is replaced at request time (serving.cache)
    snapshot: Snapshot | None = Field(
        None, description="The feature snapshot's age on the day of the decision (None for a posted vector)"
    )


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
        None, max_length=200, pattern=NO_CONTROL_CHARACTERS,
        description="Stored features to start from (overridden by `features`)",
    )  # fmt: skip
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
    decision_id: str = Field(min_length=1, max_length=64, pattern=NO_CONTROL_CHARACTERS)
    action_taken: str = Field(min_length=1, max_length=100, pattern=NO_CONTROL_CHARACTERS)
    outcome: str = Field(
        min_length=1, max_length=100, pattern=NO_CONTROL_CHARACTERS,
        description="e.g. retained, churned, upgraded, converted",
    )  # fmt: skip
    ts: AwareDatetime = Field(description="When the outcome happened, with its time zone")
    value: float | None = Field(None, allow_inf_nan=False)

    @field_validator("ts")
    @classmethod
    def _within_utc_range(cls, ts: dt.datetime) -> dt.datetime:
        """9999-12-31T23:59:59-12:00 parses but has no UTC time (it is past year 9999): a 422, not a 500."""
        try:
            ts.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError("ts is outside the representable range once converted to UTC") from None
        return ts


class OutcomeResponse(BaseModel):
    decision_id: str
    outcome: str
    status: Literal["recorded", "duplicate"]


class WorkerState(BaseModel):
    pid: int = Field(description="The worker process")
    versions: Versions | None = Field(description="What it serves (None: nothing loaded)")
    shadow: Versions | None
    loaded_at: dt.datetime | None
    reload_generation: int = Field(description="The last admin reload it followed (run directory counter)")
    last_reload_error: str | None
    reload_failures: int


class ModelsResponse(BaseModel):
    alias: str
    versions: Versions
    shadow: Versions | None
    loaded_at: dt.datetime
    store: dict
    workers: list[WorkerState] = Field(
        default_factory=list, description="Every worker process of this server and the versions it serves"
    )


class ReloadResponse(BaseModel):
    reloaded: bool
    versions: Versions
