"""The policy evaluation by true margin: contact precision and recall on a hand-made case, the oracle
against every other policy, and the cross-fitted restricted oracle."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate_policy import (
    allowed_actions,
    best_choice,
    contact_precision_recall,
    margin_policy_values,
    restricted_oracle_scores,
    value_lost,
    value_of,
)


def test_contact_precision_and_recall_by_hand() -> None:
    # users 0–5 are at_risk or dormant, 6–7 are not and never count
    members = np.array([1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    clm = np.array([0, 1, -1, 2, -1, -1, 0, 0])  # contacts 0, 1, 3
    oracle = np.array([2, -1, 0, 1, 1, -1, 0, -1])  # contacts 0, 2, 3, 4
    q = contact_precision_recall(clm, oracle, members)
    # both contact 0 and 3 (the action need not match): precision 2/3, recall 2/4
    assert q["precision"] == pytest.approx(2 / 3)
    assert q["recall"] == pytest.approx(0.5)
    assert (q["users"], q["contacted"], q["oracle_contacted"], q["both"]) == (6, 3, 4, 2)
    nobody = contact_precision_recall(np.full(8, -1), oracle, members)
    assert nobody["precision"] is None and nobody["recall"] == 0.0


def test_the_oracle_is_worth_at_least_every_other_policy() -> None:
    rng = np.random.default_rng(3)
    n, actions = 2000, 5
    value = rng.normal(-0.5, 2.0, (n, actions))
    costs = rng.uniform(0, 3, actions)
    contactable = rng.random((n, actions)) < 0.4
    stage = rng.choice(["at_risk", "dormant", "mature"], n)
    choices = {
        "clm": best_choice(value + rng.normal(0, 2, (n, actions)), contactable),
        "no_action": np.full(n, -1),
        "stage_playbook": np.where(contactable[:, 0], 0, -1),
        # a rule that ignores eligibility: the oracle may use what it sends
        "top_risk_discount": np.where(rng.random(n) < 0.1, 3, -1),
    }
    allowed = allowed_actions(contactable, choices)
    assert allowed[choices["top_risk_discount"] == 3, 3].all()
    choices["oracle"] = best_choice(value, allowed)
    choices["restricted_oracle"] = best_choice(value + rng.normal(0, 1, (n, actions)), allowed)
    known = np.ones(n, dtype=bool)
    # user by user, the oracle's choice is worth at least any other policy's, and at least nothing
    oracle = value_of(choices["oracle"], value)
    assert (oracle >= 0).all()
    for name, choice in choices.items():
        assert (oracle >= value_of(choice, value)).all(), name
    result = margin_policy_values(choices, value, costs, contactable, known, stage)
    for name, mean in result.mean.items():
        assert result.mean["oracle"] >= mean, name
    assert result.mean["no_action"] == 0.0
    assert result.mean["oracle"] > result.mean["clm"] > 0
    assert result.ratio("oracle") == pytest.approx(result.mean["clm"] / result.mean["oracle"])
    # the standard error is the sample standard deviation over √n
    rows = np.arange(n)
    per_user = np.where(choices["clm"] >= 0, value[rows, np.clip(choices["clm"], 0, None)], 0.0)
    assert result.se["clm"] == pytest.approx(per_user.std(ddof=1) / np.sqrt(n))
    assert result.difference_se["clm"] == 0.0
    assert 0 <= result.contact_quality["vs_oracle.precision"] <= 1


def test_restricted_oracle_learns_what_the_features_show_without_seeing_each_users_truth() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    features = rng.normal(size=(n, 3))
    # action 0 pays when feature 0 is high, action 1 when it is low; the rest is noise no feature shows
    value = np.stack([2 * features[:, 0], -2 * features[:, 0]], axis=1) + rng.normal(0, 1, (n, 2))
    allowed = np.ones((n, 2), dtype=bool)
    scores = restricted_oracle_scores(features, value, allowed, folds=5)
    chosen = best_choice(scores, allowed)
    right = np.where(features[:, 0] > 0, 0, 1)
    clear = np.abs(features[:, 0]) > 0.5
    assert (chosen[clear] == right[clear]).mean() > 0.95
    # cross-fitted: the per-user noise it cannot see is not in the predictions
    assert np.corrcoef(scores[:, 0] - 2 * features[:, 0], value[:, 0] - 2 * features[:, 0])[0, 1] < 0.2


def test_value_lost_splits_the_gap_to_the_reference_by_stage_and_kind() -> None:
    actions = ("a", "b")
    value = np.array([[5.0, 1.0], [2.0, 3.0], [4.0, 0.5], [-1.0, -2.0], [1.0, 1.0], [9.0, 9.0]])
    stage = np.array(["at_risk", "mature", "mature", "dormant", "mature", "mature"])
    known = np.array([True, True, True, True, True, False])  # user 5's truth is unknown: never counted
    clm = np.array([-1, 0, 0, 0, 1, -1])  # 0 missed, 1 other action, 2 same, 3 wasted, 4 same value
    reference = np.array([0, 1, 0, -1, 0, 0])
    lost = value_lost(clm, reference, value, stage, known, actions)
    by_kind = lost.set_index(["stage", "kind", "action", "reference_action"])["lost_per_1000"]
    per_1000 = 1000.0 / 5
    assert by_kind[("at_risk", "missed", "no_action", "a")] == pytest.approx(5.0 * per_1000)
    assert by_kind[("mature", "other_action", "a", "b")] == pytest.approx(1.0 * per_1000)
    assert by_kind[("dormant", "wasted", "a", "no_action")] == pytest.approx(1.0 * per_1000)
    assert by_kind[("mature", "other_action", "b", "a")] == pytest.approx(0.0)
    assert len(lost) == 4  # user 2 chose the same, user 5 is unknown
    assert list(lost["lost_per_1000"]) == sorted(lost["lost_per_1000"], reverse=True)
    # the rows add up to the reference's value minus the policy's, on the known users
    gap = (value_of(reference, value) - value_of(clm, value))[known].mean() * 1000.0
    assert lost["lost_per_1000"].sum() == pytest.approx(gap)
