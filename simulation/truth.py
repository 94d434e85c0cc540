"""Ground truth: the exact probability that a user churns or upgrades within a horizon, with and without
an action, computed by propagating the simulator's own latent Markov chain forward from a cutoff."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.params import CHURNED, DECLINING, REACTIVATED
from simulation.world import MAX_EXIT_PROBABILITY, RETURN_TRANSITION, TRANSITIONS

_FROM = np.array([t[0] for t in TRANSITIONS])
_TO = np.array([t[1] for t in TRANSITIONS])
_CHURN_SIDE = np.array([t[3] for t in TRANSITIONS])


def adjusted_transition_probabilities(
    base: np.ndarray, churn_log_effect: np.ndarray, return_log_effect: np.ndarray
) -> np.ndarray:
    """Daily transition probabilities (n, K) once an action's effect is applied: churn-side hazards are
    multiplied by exp(effect of the stage they leave), the return by exp(return effect); each stage's
    total exit probability is capped at MAX_EXIT_PROBABILITY. Used by the simulator and the truth alike."""
    multiplier = np.ones_like(base)
    multiplier[:, _CHURN_SIDE] = np.exp(churn_log_effect[:, _FROM[_CHURN_SIDE]])
    multiplier[:, RETURN_TRANSITION] = np.exp(return_log_effect)
    probabilities = np.minimum(base * multiplier, 0.5)
    for stage in np.unique(_FROM):
        columns = np.flatnonzero(stage == _FROM)
        total = probabilities[:, columns].sum(axis=1)
        scale = np.where(total > MAX_EXIT_PROBABILITY, MAX_EXIT_PROBABILITY / np.maximum(total, 1e-12), 1.0)
        probabilities[:, columns] *= scale[:, None]
    return probabilities


def horizon_probabilities(
    stage: np.ndarray,
    probabilities_during_effect: np.ndarray,
    probabilities_after_effect: np.ndarray,
    upgrade_during_effect: np.ndarray,
    upgrade_after_effect: np.ndarray,
    effect_days_left: np.ndarray,
    horizon_days: int,
) -> tuple[np.ndarray, np.ndarray]:
    """P(churn within the horizon) and P(at least one upgrade within it), per user.

    For a user alive at the cutoff, churn means entering the churned state on one of the next
    `horizon_days` days; for a user already churned it means not coming back within them. Each day the
    chain first moves stage, then draws an upgrade from the new stage — the simulator's order. Effects
    apply on the first `effect_days_left` days, base probabilities after.
    """
    n = len(stage)
    during_t = np.ascontiguousarray(probabilities_during_effect.T)
    after_t = np.ascontiguousarray(probabilities_after_effect.T)
    up_during_t = np.ascontiguousarray(upgrade_during_effect.T)
    up_after_t = np.ascontiguousarray(upgrade_after_effect.T)
    start = np.zeros((6, n))
    start[stage, np.arange(n)] = 1.0
    churn_chain = start  # churned is absorbing: mass there has churned within the horizon
    no_upgrade = start.copy()  # the full chain; mass leaves it when an upgrade happens
    stayed_churned = np.ones(n)
    flow = np.empty(n)
    for day in range(horizon_days):
        active = day < effect_days_left
        if active.all():
            probabilities, upgrade = during_t, up_during_t
        elif not active.any():
            probabilities, upgrade = after_t, up_after_t
        else:
            probabilities = np.where(active, during_t, after_t)
            upgrade = np.where(active, up_during_t, up_after_t)
        for chain, absorbing in ((churn_chain, True), (no_upgrade, False)):
            before = chain.copy()
            for k in range(len(_FROM)):
                if absorbing and k == RETURN_TRANSITION:
                    continue
                np.multiply(before[_FROM[k]], probabilities[k], out=flow)
                chain[_FROM[k]] -= flow
                chain[_TO[k]] += flow
        no_upgrade *= 1.0 - upgrade
        stayed_churned *= 1.0 - probabilities[RETURN_TRANSITION]
    p_churn = np.where(stage == CHURNED, stayed_churned, churn_chain[CHURNED])
    p_upgrade = 1.0 - no_upgrade.sum(axis=0)
    return np.clip(p_churn, 0.0, 1.0), np.clip(p_upgrade, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------------
# Margin over a value horizon
#
# The state of a user on a day is (latent stage, plan) — 6 × 3 — plus, for a declining user, how long they
# have been declining: activity decays as exp(−days declining / decline_decay_days), and no transition
# depends on that age, so the decay-weighted declining mass per plan (`W`) evolves linearly beside the
# stage × plan mass (`X`). Each day follows the simulator's order: stage moves, then plan changes (an
# upgrade drawn from the new stage; a declining paid user may downgrade), then revenue: the plan's price
# per day while alive and the expected purchases of an active day (a returning user is active on the day
# they return). Margins are that revenue × margin share, discounted by 30-day month.

_DECLINING_EXITS = np.flatnonzero(_FROM == DECLINING)
_ALIVE = np.array([s != CHURNED for s in range(6)])


@dataclass(frozen=True)
class MarginParams:
    """How the true margin is valued: the value horizon in 30-day months, the annual discount rate (each
    day's margin is discounted by (1 + rate)^(−m/12), m its 30-day month from 1) and the share of revenue
    that is margin. The same conventions as the product's CLV (`models/value.py`)."""

    horizon_months: int = 12
    discount_rate_annual: float = 0.10
    margin_share: float = 0.7
    last_cutoffs: int = 2  # computed at the last this many truth cutoffs only; 0: at every one

    def __post_init__(self) -> None:
        if self.last_cutoffs < 0:
            raise ValueError(f"last_cutoffs must be ≥ 0 (0: every truth cutoff), got {self.last_cutoffs}")
        if self.horizon_months < 1:
            raise ValueError(f"value horizon must be at least one month, got {self.horizon_months}")
        if self.discount_rate_annual < 0 or not 0 <= self.margin_share <= 1:
            raise ValueError("discount rate must be ≥ 0 and margin share in [0, 1]")

    @property
    def horizon_days(self) -> int:
        return 30 * self.horizon_months

    def daily_weights(self) -> np.ndarray:
        """margin share × discount factor of each day of the horizon."""
        month = np.arange(self.horizon_days) // 30 + 1
        return self.margin_share * (1.0 + self.discount_rate_annual) ** (-month / 12.0)


@dataclass
class Economy:
    """What a user spends, the same with or without a contact. Users sit in the last two axes (1, n).

    downgrade (1, n): P(a declining paid user moves down a plan) a day; activity (2, 6, 1, n): P(active)
    on a weekday / weekend day by stage, before a declining user's decay; spend (3, 1, n): expected
    purchase amount on an active day by plan; price (3,): plan price per day."""

    downgrade: np.ndarray
    activity: np.ndarray
    spend: np.ndarray
    price: np.ndarray
    decline_decay: float  # exp(−1 / decline_decay_days): a further day's decay of a declining user

    def __post_init__(self) -> None:
        self._rewards = {weekend: self._reward_coefficients(weekend) for weekend in (False, True)}

    def reward_coefficients(self, weekend: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A day's revenue as linear coefficients (see `_reward_coefficients`), computed once."""
        return self._rewards[bool(weekend)]

    def _reward_coefficients(self, weekend: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A day's revenue as linear coefficients on the stage × plan mass (6, 3, 1, n), on the
        decay-weighted declining mass (3, 1, n) and on the mass that returned that day (3, 1, n), which is
        active for sure rather than with P(active)."""
        act = self.activity[int(weekend)]
        buying = (_ALIVE & (np.arange(6) != DECLINING)).astype(float)
        on_x = (_ALIVE[:, None] * self.price[None, :])[:, :, None, None] + buying[:, None, None, None] * (
            act[:, None] * self.spend[None]
        )
        on_w = act[DECLINING][None] * self.spend
        on_returned = (1.0 - act[REACTIVATED])[None] * self.spend
        return on_x, on_w, on_returned


@dataclass
class Laws:
    """The daily laws an action changes, for S scenarios of n users (an axis of 1 broadcasts):
    transitions (K, S, n), TRANSITIONS probabilities; upgrade (3, 6, S, n), P(move up a plan) by
    current plan and stage."""

    transitions: np.ndarray
    upgrade: np.ndarray

    def __post_init__(self) -> None:
        exits = np.zeros((6, *self.transitions.shape[1:]))
        for k in range(len(_FROM)):
            exits[_FROM[k]] += self.transitions[k]
        self.stay = 1.0 - exits  # (6, S, n)
        self.up_by_stage = np.ascontiguousarray(self.upgrade.swapaxes(0, 1))  # (6, 3, S, n)

    def where(self, mask: np.ndarray, other: Laws) -> Laws:
        """These laws where `mask` (S, n) holds, `other` elsewhere."""
        return Laws(
            np.where(mask, self.transitions, other.transitions), np.where(mask, self.upgrade, other.upgrade)
        )


def margin_step(
    mass: np.ndarray, decayed: np.ndarray, laws: Laws, economy: Economy, weekend: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One day forward: the stage × plan mass (6, 3, S, n) and decay-weighted declining mass (3, S, n)
    after the day's moves, and the day's expected revenue (S, n)."""
    p = laws.transitions
    moved = mass * laws.stay[:, None]
    into_declining = np.zeros_like(decayed)
    returned = None
    for k in range(len(_FROM)):
        flow = mass[_FROM[k]] * p[k]
        moved[_TO[k]] += flow
        if _TO[k] == DECLINING:
            into_declining += flow
        if k == RETURN_TRANSITION:
            returned = flow
    decayed = decayed * (laws.stay[DECLINING] * economy.decline_decay) + into_declining
    # plan changes, all drawn from the mass after the stage moves
    up = moved * laws.up_by_stage  # up[s, p] leaves plan p for p + 1
    down_rate = (1.0 - laws.upgrade[1:, DECLINING]) * economy.downgrade  # (2, S, n) for plans 1, 2
    down = moved[DECLINING, 1:] * down_rate
    after = moved
    after -= up
    after[:, 1:] += up[:, :-1]
    after[DECLINING, 1:] -= down
    after[DECLINING, :-1] += down
    up_w = decayed * laws.upgrade[:, DECLINING]
    down_w = decayed[1:] * down_rate
    decayed -= up_w
    decayed[1:] += up_w[:-1]
    decayed[1:] -= down_w
    decayed[:-1] += down_w
    on_x, on_w, on_returned = economy.reward_coefficients(weekend)
    revenue = np.einsum("spkn,spkn->kn", after, np.broadcast_to(on_x, after.shape))
    revenue += (decayed * on_w).sum(axis=0) + (returned * on_returned).sum(axis=0)
    return after, decayed, revenue


def margin_to_go(
    laws: Laws, economy: Economy, weights: np.ndarray, first_weekend: int, start_day: int
) -> tuple[np.ndarray, np.ndarray]:
    """The expected weighted revenue from day `start_day` to the end of `weights` as linear coefficients on
    the state before that day: (6, 3, S, n) on the stage × plan mass and (3, S, n) on the decay-weighted
    declining mass. Backward recursion (the adjoint of `margin_step`), so it is computed once per user and
    applied to every scenario's state. Day t is a weekend day when (first_weekend + t) % 7 ≥ 5."""
    p, upgrade = laws.transitions, laws.upgrade
    shape = np.broadcast_shapes(p.shape[1:], upgrade.shape[2:], economy.spend.shape[1:])
    on_mass = np.zeros((6, 3, *shape))
    on_decayed = np.zeros((3, *shape))
    up_rate = upgrade.swapaxes(0, 1)  # (6, 3, S, n)
    down_rate = (1.0 - upgrade[1:, DECLINING]) * economy.downgrade
    stay_declining = (1.0 - p[_DECLINING_EXITS].sum(axis=0)) * economy.decline_decay
    for t in range(len(weights) - 1, start_day - 1, -1):
        on_x, on_w, on_returned = economy.reward_coefficients((first_weekend + t) % 7 >= 5)
        a = weights[t] * on_x + on_mass  # on the mass after day t's moves
        b = weights[t] * on_w + on_decayed
        # through the plan changes
        a1 = a.copy()
        a1[:, :2] += up_rate[:, :2] * (a[:, 1:] - a[:, :2])
        a1[DECLINING, 1:] += down_rate * (a[DECLINING, :2] - a[DECLINING, 1:])
        b1 = b.copy()
        b1[:2] += upgrade[:2, DECLINING] * (b[1:] - b[:2])
        b1[1:] += down_rate * (b[:2] - b[1:])
        # through the stage moves
        on_mass = a1.copy()
        for k in range(len(_FROM)):
            gain = a1[_TO[k]] - a1[_FROM[k]]
            if _TO[k] == DECLINING:
                gain = gain + b1
            if k == RETURN_TRANSITION:
                gain = gain + weights[t] * on_returned
            on_mass[_FROM[k]] += p[k] * gain
        on_decayed = b1 * stay_declining
    return on_mass, on_decayed


def expected_margins(
    stage: np.ndarray,
    plan: np.ndarray,
    decayed_start: np.ndarray,
    scenarios: list[tuple[Laws, np.ndarray]],
    after: Laws,
    economy: Economy,
    params: MarginParams,
    first_weekend: int,
) -> list[np.ndarray]:
    """Expected discounted margin over the value horizon for users starting in `stage` and `plan` (n,),
    one (S, n) array per group of `scenarios`: each group's laws (S scenarios) apply on its first
    `days_left` (S, n) days, `after` (the users' own base laws) from then on. `decayed_start` (n,) is a
    declining user's activity decay on the day before the cutoff (0 for other stages). Forward through
    the effect windows, then the value still to come from `margin_to_go` on the base laws, computed once
    for all groups."""
    weights = params.daily_weights()
    n = len(stage)
    window = min(max(int(days_left.max(initial=0)) for _, days_left in scenarios), len(weights))
    states, totals = [], []
    for during, days_left in scenarios:
        count = days_left.shape[0]
        mass = np.zeros((6, 3, count, n))
        mass[stage, plan, :, np.arange(n)] = 1.0
        decayed = np.zeros((3, count, n))
        decayed[plan, :, np.arange(n)] = decayed_start[:, None]
        total = np.zeros((count, n))
        for t in range(window):
            active = t < days_left
            laws = during if active.all() else after if not active.any() else during.where(active, after)
            mass, decayed, revenue = margin_step(mass, decayed, laws, economy, (first_weekend + t) % 7 >= 5)
            total += weights[t] * revenue
        states.append((mass, decayed))
        totals.append(total)
    on_mass, on_decayed = margin_to_go(after, economy, weights, first_weekend, window)
    return [
        total + (mass * on_mass).sum(axis=(0, 1)) + (decayed * on_decayed).sum(axis=0)
        for total, (mass, decayed) in zip(totals, states, strict=True)
    ]
