"""Offline policy evaluation: IPS/SNIPS/DR on hand-computed logs and on a randomised log with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from training.offline import estimate, outcome_model_values, realised_rewards

ACTIONS = ("a", "b")


def test_ips_by_hand() -> None:
    # four logged rows; the policy always says "a"
    logged = ["a", "no_action", "b", "a"]
    propensity = np.array([0.5, 0.5, 0.25, 0.25])
    reward = np.array([2.0, -1.0, 5.0, 4.0])
    q_hat = np.zeros((4, 3))
    result = estimate(["a"] * 4, logged, propensity, reward, q_hat, ACTIONS)
    # V(a) = (2/0.5 + 4/0.25)/4 = 5; V(none) = (-1/0.5)/4 = -0.5 → +5.5 per row
    assert result.ips == pytest.approx(1000 * 5.5)
    # SNIPS: (4 + 16) / (2 + 4) − (−2 / 2)
    assert result.snips == pytest.approx(1000 * (20 / 6 + 1.0))
    assert result.matched == 2
    # with q_hat = 0 the DR estimate equals IPS
    assert result.dr == pytest.approx(result.ips)
    assert result.direct == 0.0


def test_dr_with_a_perfect_outcome_model_is_the_direct_value() -> None:
    rng = np.random.default_rng(0)
    n = 50
    q_hat = rng.normal(size=(n, 3))
    logged = rng.choice(["no_action", *ACTIONS], size=n)
    column = {"no_action": 0, "a": 1, "b": 2}
    reward = q_hat[np.arange(n), [column[a] for a in logged]]  # rewards exactly as modelled
    policy = rng.choice(["no_action", *ACTIONS], size=n)
    result = estimate(policy, logged, np.full(n, 1 / 3), reward, q_hat, ACTIONS)
    direct = np.mean(q_hat[np.arange(n), [column[a] for a in policy]] - q_hat[:, 0])
    assert result.dr == pytest.approx(1000 * direct)
    assert result.direct == pytest.approx(1000 * direct)


def test_estimates_recover_the_true_value_of_a_randomised_log() -> None:
    rng = np.random.default_rng(1)
    n = 200_000
    x = rng.random(n)
    # true mean rewards: nothing 0, a helps when x > 0.5, b always costs 1
    mean = np.column_stack([np.zeros(n), np.where(x > 0.5, 3.0, -1.0), np.full(n, -1.0)])
    logged_index = rng.choice(3, size=n, p=[0.6, 0.2, 0.2])
    propensity = np.array([0.6, 0.2, 0.2])[logged_index]
    reward = mean[np.arange(n), logged_index] + rng.normal(0, 2.0, n)
    names = np.array(["no_action", "a", "b"], dtype=object)
    policy = np.where(x > 0.5, "a", "no_action")
    truth = 1000 * np.mean(np.where(x > 0.5, 3.0, 0.0))
    noisy_model = mean + rng.normal(0, 0.5, mean.shape)  # an imperfect outcome model
    result = estimate(policy, names[logged_index], propensity, reward, noisy_model, ACTIONS)
    assert result.ips == pytest.approx(truth, rel=0.05)
    assert result.dr == pytest.approx(truth, rel=0.05)
    assert result.support == 1.0


def test_rewards_and_outcome_model_values() -> None:
    reward = realised_rewards(
        ["a", "no_action"], np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([100.0, 50.0]),
        np.array([10.0, 20.0]), {"a": 2.0},
    )  # fmt: skip
    assert reward.tolist() == [-102.0, 20.0]
    q = outcome_model_values(
        np.array([0.1]), np.array([0.2]), np.array([[-0.05, 0.02]]), np.array([[0.0, 0.1]]),
        np.array([100.0]), np.array([10.0]), [1.0, 3.0],
    )  # fmt: skip
    # no_action: −0.1·100 + 0.2·10 = −8; a: −0.05·100 + 0.2·10 − 1 = −4; b: −0.12·100 + 0.3·10 − 3 = −12
    assert q.tolist() == [pytest.approx([-8.0, -4.0, -12.0])]


def test_bad_propensities_are_refused() -> None:
    with pytest.raises(ValueError, match="propensities"):
        estimate(["a"], ["a"], np.array([0.0]), np.array([1.0]), np.zeros((1, 3)), ACTIONS)


def test_standard_errors_shrink_with_more_rows() -> None:
    rng = np.random.default_rng(2)

    def run(n: int):
        logged_index = rng.choice(2, size=n, p=[0.5, 0.5])
        names = np.array(["no_action", "a"], dtype=object)
        reward = np.where(logged_index == 1, 1.0, 0.0) + rng.normal(0, 1.0, n)
        return estimate(
            np.full(n, "a"), names[logged_index], np.full(n, 0.5), reward, np.zeros((n, 3)), ACTIONS
        )

    small, large = run(1_000), run(100_000)
    assert 0 < large.ips_se < small.ips_se / 5
    # the truth (1,000 per 1,000 rows) lies within 4 standard errors
    assert abs(large.ips - 1000.0) < 4 * large.ips_se
