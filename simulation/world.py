"""The population and the laws of the simulated world: user traits, daily transition probabilities and
the true effect of every action. The simulator and the ground-truth function both read these, so the
truth is exact by construction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.params import (
    ACTIONS,
    CHANNEL_WEIGHTS,
    CHANNELS,
    CHURNED,
    COUNTRY_WEIGHTS,
    DECLINING,
    GROWING,
    MATURE,
    ONBOARDING,
    PLAN_PRICES,
    REACTIVATED,
    SimulationParams,
)

# (from, to, name, churn_side): the latent Markov chain, one daily step at a time. Churn-side hazards are
# the ones an action's retention effect multiplies; the return transition is what a win-back moves.
TRANSITIONS: tuple[tuple[int, int, str, bool], ...] = (
    (ONBOARDING, GROWING, "onboarding_done", False),
    (ONBOARDING, CHURNED, "onboarding_churn", True),
    (GROWING, MATURE, "growing_to_mature", False),
    (GROWING, DECLINING, "growing_decline", True),
    (GROWING, CHURNED, "growing_churn", True),
    (MATURE, DECLINING, "mature_decline", True),
    (MATURE, CHURNED, "mature_churn", True),
    (DECLINING, CHURNED, "declining_churn", True),
    (DECLINING, MATURE, "declining_recover", False),
    (CHURNED, REACTIVATED, "churned_return", False),
    (REACTIVATED, GROWING, "reactivated_done", False),
    (REACTIVATED, CHURNED, "reactivated_churn", True),
)
RETURN_TRANSITION = 9
MAX_EXIT_PROBABILITY = 0.95

# How much each action's trait-driven retention effect applies in each latent stage
# (onboarding, growing, mature, declining, churned, reactivated).
RELEVANCE: dict[str, tuple[float, ...]] = {
    "onboarding_guide": (1.0, 0.3, 0.0, 0.0, 0.0, 1.0),
    "welcome_offer": (1.0, 0.3, 0.0, 0.0, 0.0, 1.0),
    "recommendation": (0.3, 1.0, 1.0, 0.3, 0.0, 0.3),
    "education_content": (0.5, 1.0, 0.5, 0.3, 0.0, 0.5),
    "loyalty_reward": (0.0, 0.3, 1.0, 0.6, 0.0, 0.0),
    "upgrade_offer": (0.5, 1.0, 1.0, 1.0, 0.0, 0.5),
    "referral_invite": (0.0, 0.5, 1.0, 0.5, 0.0, 0.0),
    "retention_discount": (0.3, 0.5, 0.5, 1.0, 0.0, 0.3),
    "satisfaction_survey": (0.2, 0.5, 0.5, 1.0, 0.0, 0.2),
    "winback_offer": (0.0, 0.0, 0.0, 1.0, 0.0, 0.0),
}
ALIVE_MASK = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0])


@dataclass
class Population:
    """Fixed per-user traits. Observable ones drive events; `hidden_risk` is the noise no model can see."""

    signup_day: np.ndarray  # int32, day index from the start
    channel: np.ndarray  # int8 index into CHANNELS
    country: np.ndarray  # int8 index into COUNTRIES
    signup_plan: np.ndarray  # int8 index into PLANS
    engagement: np.ndarray
    price_sensitivity: np.ndarray
    frustration: np.ndarray
    skill: np.ndarray
    social: np.ndarray
    contact_aversion: np.ndarray  # bool
    hidden_risk: np.ndarray

    @property
    def size(self) -> int:
        return len(self.signup_day)

    def take(self, index: np.ndarray) -> Population:
        return Population(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})


def draw_population(
    n_users: int, days: int, rng: np.random.Generator, params: SimulationParams
) -> Population:
    """Signups over the period (a launch cohort, then a steady flow), channels, plans and latent traits."""
    launch = rng.random(n_users) < params.launch_share
    launch_days = min(params.launch_days, days)
    signup_day = np.where(
        launch,
        rng.integers(0, launch_days, n_users),
        rng.integers(0, max(days, 1), n_users),
    ).astype(np.int32)
    channel = rng.choice(len(CHANNELS), size=n_users, p=CHANNEL_WEIGHTS).astype(np.int8)
    country = rng.choice(len(COUNTRY_WEIGHTS), size=n_users, p=COUNTRY_WEIGHTS).astype(np.int8)
    paid_social = channel == CHANNELS.index("paid_social")
    paid = paid_social | (channel == CHANNELS.index("paid_search"))
    referral = channel == CHANNELS.index("referral")

    engagement = rng.lognormal(0.0, 0.5, n_users) * np.where(referral, 1.25, np.where(paid_social, 0.8, 1.0))
    price_sensitivity = np.clip(rng.beta(2.0, 2.0, n_users) + np.where(paid, 0.1, 0.0), 0.0, 1.0)
    frustration = rng.beta(1.5, 4.0, n_users)
    skill = rng.beta(2.5, 2.5, n_users)
    social = rng.beta(2.0, 3.0, n_users)
    aversion_rate = np.where(paid_social, params.aversion_rate_paid_social, params.aversion_rate)
    contact_aversion = rng.random(n_users) < aversion_rate
    hidden_risk = rng.normal(0.0, params.risk_hidden_sd, n_users)

    # Price-sensitive users choose cheaper plans.
    mix = np.asarray(params.plan_mix)
    tilt = np.stack([1 + price_sensitivity, np.ones(n_users), 1.6 - price_sensitivity], axis=1) * mix
    tilt /= tilt.sum(axis=1, keepdims=True)
    signup_plan = (rng.random(n_users)[:, None] > np.cumsum(tilt, axis=1)).sum(axis=1).astype(np.int8)

    return Population(
        signup_day=signup_day,
        channel=channel,
        country=country,
        signup_plan=signup_plan,
        engagement=engagement,
        price_sensitivity=price_sensitivity,
        frustration=frustration,
        skill=skill,
        social=social,
        contact_aversion=contact_aversion,
        hidden_risk=hidden_risk,
    )


def risk_score(pop: Population, params: SimulationParams) -> np.ndarray:
    """The latent log-hazard shift: frustration, price pressure and low engagement raise churn risk."""
    price_pressure = pop.price_sensitivity * np.asarray(PLAN_PRICES)[pop.signup_plan] / max(PLAN_PRICES)
    return (
        params.risk_frustration * (pop.frustration - 0.27)
        + params.risk_price * (price_pressure - 0.1)
        - params.risk_engagement * np.log(pop.engagement)
        + pop.hidden_risk
    )


def base_transition_probabilities(pop: Population, params: SimulationParams) -> np.ndarray:
    """Daily probability of each transition in TRANSITIONS per user, shape (n_users, len(TRANSITIONS))."""
    z = risk_score(pop, params)
    decline = np.exp(params.risk_scale_decline * z)
    churn = np.exp(params.risk_scale_churn * z)
    onboarding_risk = decline * np.exp(params.risk_skill_onboarding * (0.5 - pop.skill))
    ones = np.ones(pop.size)
    columns = {
        "onboarding_done": ones / params.onboarding_days,
        "onboarding_churn": params.onboarding_churn * onboarding_risk,
        "growing_to_mature": ones * params.growing_to_mature,
        "growing_decline": params.growing_decline * decline,
        "growing_churn": params.growing_churn * churn,
        "mature_decline": params.mature_decline * decline,
        "mature_churn": params.mature_churn * churn,
        "declining_churn": params.declining_churn * churn,
        "declining_recover": params.declining_recover / churn,
        "churned_return": params.churned_return / churn,
        "reactivated_done": ones / params.reactivated_days,
        "reactivated_churn": params.reactivated_churn * onboarding_risk,
    }
    probabilities = np.stack([columns[name] for _, _, name, _ in TRANSITIONS], axis=1)
    return np.clip(probabilities, 0.0, 0.5)


def base_upgrade_probability(pop: Population, plan: np.ndarray, params: SimulationParams) -> np.ndarray:
    """Daily probability of moving up a plan, per user and latent stage, shape (n_users, 6); 0 for pro."""
    base = np.select([plan == 0, plan == 1], [params.upgrade_free, params.upgrade_basic], 0.0)
    trait = np.exp(
        params.upgrade_engagement * np.log(pop.engagement)
        - params.upgrade_price * (pop.price_sensitivity - 0.5)
    )
    return np.clip((base * trait)[:, None] * np.asarray(params.upgrade_stage)[None, :], 0.0, 0.2)


def action_log_effects(action: str, pop: Population, params: SimulationParams) -> tuple[np.ndarray, ...]:
    """The true effect of contacting each user with `action`, as log-multipliers:
    on churn-side hazards per latent stage (n, 6), on the upgrade probability (n,), on the return
    probability of a churned user (n,). Negative churn values help; contact-averse users are harmed."""
    n = pop.size
    ps, fr, sk = pop.price_sensitivity, pop.frustration, pop.skill
    eng = np.minimum(pop.engagement, 2.5)
    zeros = np.zeros(n)
    churn, upgrade, ret = zeros, zeros, zeros
    if action == "onboarding_guide":
        churn = -1.0 * (1.0 - sk)
    elif action == "welcome_offer":
        churn, upgrade = -0.7 * ps, 1.2 * ps
    elif action == "recommendation":
        churn, upgrade = -0.22 * eng, 0.3 + zeros
    elif action == "education_content":
        churn, upgrade = -0.8 * (1.0 - sk), 0.6 * sk
    elif action == "loyalty_reward":
        churn = np.where(pop.engagement > 1.0, -0.7, -0.1)
    elif action == "upgrade_offer":
        churn, upgrade = 0.6 * ps**2, 1.5 * (1.0 - ps)
    elif action == "referral_invite":
        churn = -0.15 * pop.social
    elif action == "retention_discount":
        churn, upgrade = -1.1 * ps, -0.3 + zeros
    elif action == "satisfaction_survey":
        level = np.minimum(fr / 0.5, 1.0)
        churn = -1.2 * level + 0.25 * (1.0 - level)
    elif action == "winback_offer":
        churn, ret = -0.3 * ps, 1.0 + 1.0 * ps
    else:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    relevance = np.asarray(RELEVANCE[action])
    harm = params.aversion_harm * pop.contact_aversion
    churn_by_stage = churn[:, None] * relevance[None, :] + harm[:, None] * ALIVE_MASK[None, :]
    ret = ret - 0.5 * pop.contact_aversion
    return churn_by_stage, upgrade, ret


def activity_base(engagement: np.ndarray, stage: np.ndarray, params: SimulationParams) -> np.ndarray:
    """Daily P(active) before a declining user's decay, the weekend factor and the 0.95 cap."""
    return params.active_base * engagement * np.asarray(params.active_stage)[stage]


def purchase_probability(
    price_sensitivity: np.ndarray, plan: np.ndarray, params: SimulationParams
) -> np.ndarray:
    """P(an active user buys something that day)."""
    return (params.purchase_base + params.purchase_price * (1 - price_sensitivity)) * np.asarray(
        params.purchase_plan
    )[plan]


def purchase_median(price_sensitivity: np.ndarray, plan: np.ndarray, params: SimulationParams) -> np.ndarray:
    """Median purchase amount (lognormal with sd `amount_sd` on the log scale)."""
    return params.amount_median * (1.5 - price_sensitivity) * np.asarray(params.purchase_plan)[plan]
