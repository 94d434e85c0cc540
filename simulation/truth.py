"""Ground truth: the exact probability that a user churns or upgrades within a horizon, with and without
an action, computed by propagating the simulator's own latent Markov chain forward from a cutoff."""

from __future__ import annotations

import numpy as np

from simulation.params import CHURNED
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
