"""Every number that shapes the simulated world, in one place, with the calibration it was tuned for."""

from __future__ import annotations

from dataclasses import dataclass

# Latent lifecycle states of the simulator, in index order.
STAGES: tuple[str, ...] = ("onboarding", "growing", "mature", "declining", "churned", "reactivated")
ONBOARDING, GROWING, MATURE, DECLINING, CHURNED, REACTIVATED = range(6)
ALIVE_STAGES = (ONBOARDING, GROWING, MATURE, DECLINING, REACTIVATED)

# The product's stage vocabulary (DESIGN.md §1) for each latent state.
LATENT_TO_PRODUCT_STAGE: dict[str, str] = {
    "onboarding": "new",
    "growing": "growing",
    "mature": "mature",
    "declining": "at_risk",
    "churned": "dormant",
    "reactivated": "reactivated",
}

PLANS: tuple[str, ...] = ("free", "basic", "pro")
PLAN_PRICES: tuple[float, ...] = (0.0, 12.0, 39.0)

EVENT_TYPES: tuple[str, ...] = (
    "login",
    "feature_use",
    "purchase",
    "support_ticket",
    "upgrade",
    "downgrade",
    "cancel",
)

# The default action catalog (DESIGN.md §1); `no_action` is the logged holdout.
ACTIONS: tuple[str, ...] = (
    "onboarding_guide",
    "welcome_offer",
    "recommendation",
    "education_content",
    "loyalty_reward",
    "upgrade_offer",
    "referral_invite",
    "retention_discount",
    "satisfaction_survey",
    "winback_offer",
)
NO_ACTION = "no_action"

CHANNELS: tuple[str, ...] = ("organic", "paid_search", "paid_social", "referral", "partner")
CHANNEL_WEIGHTS: tuple[float, ...] = (0.35, 0.25, 0.20, 0.12, 0.08)
COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "CN", "BR", "IN")
COUNTRY_WEIGHTS: tuple[float, ...] = (0.32, 0.12, 0.12, 0.2, 0.12, 0.12)


@dataclass(frozen=True)
class SimulationParams:
    """Daily probabilities and effect sizes. Defaults are tuned so that (measured by tests/simulation):
    monthly churn 3–8 % of active users, monthly upgrade 1–4 % of free/basic users, oracle 30-day churn
    AUC 0.80–0.92, campaigns reach ~20 % of eligible users a month, the best-matched action cuts 30-day
    churn by 20–50 % relative, and a visible minority is harmed by contact."""

    # signups
    launch_share: float = 0.25  # share of users who sign up in the first `launch_days`
    launch_days: int = 30
    plan_mix: tuple[float, float, float] = (0.6, 0.3, 0.1)

    # latent stage transitions (daily probabilities before trait adjustment)
    onboarding_days: float = 14.0  # mean stay in onboarding (geometric)
    reactivated_days: float = 21.0
    growing_to_mature: float = 1 / 60
    onboarding_churn: float = 0.007
    growing_decline: float = 0.0046
    mature_decline: float = 0.0025
    growing_churn: float = 0.0006
    mature_churn: float = 0.0003
    declining_churn: float = 0.028
    declining_recover: float = 0.012
    churned_return: float = 0.0012
    reactivated_churn: float = 0.007

    # how traits move the churn-side hazards: hazard × exp(risk_scale · z)
    risk_frustration: float = 2.6
    risk_price: float = 1.5
    risk_engagement: float = 0.7
    risk_hidden_sd: float = 0.45
    risk_scale_decline: float = 1.0
    risk_scale_churn: float = 0.45
    risk_skill_onboarding: float = 1.6

    # upgrades (daily, free and basic users)
    upgrade_free: float = 0.0008
    upgrade_basic: float = 0.0007
    upgrade_engagement: float = 1.1
    upgrade_price: float = 1.8
    upgrade_stage: tuple[float, ...] = (0.8, 1.0, 1.3, 0.0, 0.0, 0.8)
    downgrade_declining: float = 0.004

    # activity
    active_base: float = 0.12
    active_stage: tuple[float, ...] = (1.7, 1.0, 1.1, 0.9, 0.0, 1.3)
    decline_decay_days: float = 14.0
    weekend_factor: float = 0.8
    feature_use_base: float = 0.2
    feature_use_skill: float = 1.6
    purchase_base: float = 0.05
    purchase_price: float = 0.08
    purchase_plan: tuple[float, ...] = (0.7, 1.0, 1.3)
    amount_median: float = 9.0
    amount_sd: float = 0.6
    ticket_base: float = 0.003
    ticket_frustration: float = 7.0
    ticket_declining: float = 2.5

    # historical campaigns: one wave on the first day of each month
    campaign_reach: float = 0.20
    effect_days: int = 30
    new_user_days: int = 30
    active_recency_days: int = 14
    lapsing_recency_days: int = 45
    loyal_tenure_days: int = 120
    winback_max_recency_days: int = 365

    # treatment effects: log-multipliers on churn-side hazards (negative helps)
    aversion_harm: float = 0.55
    aversion_rate: float = 0.07
    aversion_rate_paid_social: float = 0.25
