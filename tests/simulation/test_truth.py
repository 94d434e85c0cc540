"""The ground-truth propagation against hand-computed chains."""

from __future__ import annotations

import numpy as np
import pytest

from simulation.params import CHURNED, DECLINING, MATURE
from simulation.truth import adjusted_transition_probabilities, horizon_probabilities
from simulation.world import TRANSITIONS


def _only(**daily: float) -> np.ndarray:
    probabilities = np.zeros((1, len(TRANSITIONS)))
    for k, (_, _, name, _) in enumerate(TRANSITIONS):
        probabilities[0, k] = daily.get(name, 0.0)
    return probabilities


def _run(stage: int, during: np.ndarray, after: np.ndarray, days_left: int, horizon: int):
    no_upgrade = np.zeros((1, 6))
    return horizon_probabilities(
        np.array([stage]), during, after, no_upgrade, no_upgrade, np.array([days_left]), horizon
    )


def test_declining_user_churns_with_a_geometric_probability() -> None:
    p = _only(declining_churn=0.05)
    p_churn, p_upgrade = _run(DECLINING, p, p, 0, 30)
    assert p_churn[0] == pytest.approx(1 - 0.95**30)
    assert p_upgrade[0] == pytest.approx(0.0, abs=1e-12)


def test_two_step_path_mature_to_declining_to_churned() -> None:
    a, b, horizon = 0.1, 0.2, 3
    p = _only(mature_decline=a, declining_churn=b)
    # paths that reach churn within 3 days: decline on day 1 or 2, then churn before the horizon ends
    expected = a * (1 - (1 - b) ** 2) + (1 - a) * a * b
    p_churn, _ = _run(MATURE, p, p, 0, horizon)
    assert p_churn[0] == pytest.approx(expected)


def test_effect_applies_only_while_it_lasts() -> None:
    during, after = _only(declining_churn=0.02), _only(declining_churn=0.1)
    p_churn, _ = _run(DECLINING, during, after, 5, 10)
    assert p_churn[0] == pytest.approx(1 - 0.98**5 * 0.9**5)


def test_churned_user_churn_means_not_coming_back() -> None:
    p = _only(churned_return=0.01, reactivated_churn=0.5)
    p_churn, _ = _run(CHURNED, p, p, 0, 30)
    assert p_churn[0] == pytest.approx(0.99**30)


def test_upgrade_probability_follows_the_stage_path() -> None:
    p = _only(mature_decline=0.5)
    upgrade = np.zeros((1, 6))
    upgrade[0, MATURE] = 0.1  # declining users never upgrade
    _, p_upgrade = horizon_probabilities(np.array([MATURE]), p, p, upgrade, upgrade, np.array([0]), 2)
    # day 1: stays mature w.p. .5 then upgrades w.p. .1; day 2: still mature w.p. .5 again
    no_upgrade = 0.5 * 1 + 0.5 * 0.9 * (0.5 + 0.5 * 0.9)
    assert p_upgrade[0] == pytest.approx(1 - no_upgrade)


def test_adjustment_multiplies_churn_side_hazards_and_caps_exits() -> None:
    base = _only(declining_churn=0.3, declining_recover=0.1, churned_return=0.01)
    churn_effect = np.zeros((1, 6))
    churn_effect[0, DECLINING] = np.log(0.5)
    adjusted = adjusted_transition_probabilities(base, churn_effect, np.array([np.log(2.0)]))
    names = [t[2] for t in TRANSITIONS]
    assert adjusted[0, names.index("declining_churn")] == pytest.approx(0.15)
    assert adjusted[0, names.index("declining_recover")] == pytest.approx(0.1)  # not churn-side
    assert adjusted[0, names.index("churned_return")] == pytest.approx(0.02)
    capped = adjusted_transition_probabilities(
        _only(declining_churn=0.5, declining_recover=0.5), np.full((1, 6), np.log(3.0)), np.zeros(1)
    )
    exits = capped[0, [names.index("declining_churn"), names.index("declining_recover")]]
    assert exits.sum() == pytest.approx(0.95)
