"""The policy bundle: decide() end to end on registry-shaped rows, every candidate accounted for, a save/load
round trip that decides identically, and exploration that records its probabilities."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clm.config import load_config
from features.registry import FeatureParams, build_registry, feature_names, registry_version
from models.catalog import NO_ACTION
from models.frame import category_lists
from models.policy import PolicyBundle, decide, load_policy, save_policy
from training.policy import fit_uplift, policy_parts

CONFIG = load_config()


def rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for feature in build_registry():
        if feature.dtype == "category":
            data[feature.name] = rng.choice(list(feature.categories) or ["free", "basic", "pro"], n)
        else:
            data[feature.name] = rng.exponential(10.0, n)
    frame = pd.DataFrame(data)
    frame["current_plan"] = rng.choice(["free", "basic", "pro"], n)
    frame["tenure_days"] = rng.uniform(0, 400, n)
    frame["last_action"] = None
    frame["days_since_last_contact"] = np.nan
    frame["contacts_count_30d"] = 0.0
    return frame


@pytest.fixture(scope="module")
def policy() -> PolicyBundle:
    parts = policy_parts(CONFIG)
    actions = [a.name for a in parts["catalog"]]
    rng = np.random.default_rng(0)
    history = rows(6000, seed=1)
    treated = rng.random(len(history)) < 0.3
    # recommendation gets plenty of history and a real effect; the others are thin → priors
    action = np.where(
        treated,
        np.where(rng.random(len(history)) < 0.8, "recommendation", rng.choice(actions, len(history))),
        NO_ACTION,
    )
    base = np.clip(history["days_since_last_event"].to_numpy() / 40, 0.02, 0.9)
    churn = rng.random(len(history)) < base - 0.05 * (action == "recommendation")
    upgrade = rng.random(len(history)) < 0.05
    history = history.assign(action=action, propensity=np.where(treated, 0.3, 0.7), churn=churn.astype(float),
                             upgrade=upgrade.astype(float))  # fmt: skip
    registry = build_registry(FeatureParams.from_config(CONFIG.features))
    names = feature_names(registry)
    uplift = fit_uplift(history, parts, names, category_lists(registry, history))
    return PolicyBundle(
        name="clm-policy", catalog=parts["catalog"], contact=parts["contact"], stages_config=CONFIG.stages,
        value=parts["value"], uplift=uplift, feature_names=names, feature_version=registry_version(registry),
    )  # fmt: skip


def test_decisions_account_for_every_candidate(policy: PolicyBundle) -> None:
    frame = rows(300, seed=3)
    decisions = decide(frame, np.full(300, 0.1), np.full(300, 0.05), policy)
    table = decisions.to_frame()
    assert len(table) == 300
    assert policy.source("recommendation") == "model" and policy.source("loyalty_reward") == "prior"
    for i in range(0, 300, 37):
        candidates = decisions.candidates(i)
        assert [c["name"] for c in candidates] == [*policy.actions, NO_ACTION]
        chosen = [c for c in candidates if c["status"] == "chosen"]
        assert len(chosen) == 1 and chosen[0]["name"] == table.loc[i, "action"]
        assert all(c["reason"] for c in candidates)
        for c in candidates:
            if c["status"] == "ineligible_stage":
                assert table.loc[i, "stage"] in c["reason"]
        # the chosen action has the largest value among the eligible ones
        eligible = [
            c["expected_value"]
            for c in candidates
            if c["status"] in ("eligible", "chosen") and c["name"] != NO_ACTION
        ]
        if table.loc[i, "action"] != NO_ACTION:
            assert table.loc[i, "expected_value"] == pytest.approx(max(eligible))
            assert table.loc[i, "expected_value"] > 0
        else:
            assert all(v <= 0 for v in eligible)
    assert (table.loc[table["action"] == NO_ACTION, "expected_value"] == 0).all()
    assert set(table["uplift_source"].dropna()) <= {"model", "prior"}


def test_a_saved_policy_decides_identically(policy: PolicyBundle, tmp_path: Path) -> None:
    frame = rows(200, seed=4)
    loaded = load_policy(save_policy(policy, tmp_path / "policy"))
    first = decide(frame, np.full(200, 0.2), np.full(200, 0.03), policy).to_frame()
    again = decide(frame, np.full(200, 0.2), np.full(200, 0.03), loaded).to_frame()
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(ValueError, match="cannot load policy"):
        load_policy(tmp_path / "missing")


def test_exploration_randomises_and_records_the_probability(policy: PolicyBundle) -> None:
    frame = rows(2000, seed=5)
    explore = dataclasses.replace(policy.contact, exploration_share=0.5)
    decisions = decide(frame, np.full(2000, 0.1), np.full(2000, 0.05), policy, contact_policy=explore,
                       rng=np.random.default_rng(0))  # fmt: skip
    table = decisions.to_frame()
    assert table["explored"].mean() == pytest.approx(0.5, abs=0.05)
    assert (table.loc[~table["explored"], "propensity"] >= 0.5).all()
    assert (table["propensity"] > 0).all() and (table["propensity"] <= 1).all()
    greedy = decide(frame, np.full(2000, 0.1), np.full(2000, 0.05), policy).to_frame()
    assert (greedy["propensity"] == 1.0).all() and not greedy["explored"].any()


def test_costs_above_any_value_mean_no_contact(policy: PolicyBundle) -> None:
    costly = dataclasses.replace(
        policy, catalog=tuple(dataclasses.replace(a, cost=1e9) for a in policy.catalog)
    )
    table = decide(rows(100, seed=6), np.full(100, 0.5), np.full(100, 0.5), costly).to_frame()
    assert (table["action"] == NO_ACTION).all()


def test_the_request_path_decides_exactly_like_the_batch_path(policy: PolicyBundle) -> None:
    frame = rows(40, seed=7)
    frame.loc[::3, "current_plan"] = None
    frame.loc[::4, "last_action"] = "recommendation"
    frame.loc[::4, "days_since_last_contact"] = 3.0
    p_churn, p_upgrade = np.linspace(0.01, 0.6, 40), np.linspace(0.0, 0.2, 40)
    batch = decide(frame, p_churn, p_upgrade, policy).to_frame()
    for i in range(40):
        values = {name: frame[name].iloc[i] for name in policy.feature_names}
        values = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in values.items()}
        one = decide({k: [v] for k, v in values.items()}, p_churn[i : i + 1], p_upgrade[i : i + 1], policy,
                     uplift_matrix=policy.uplift.encode_row(values))  # fmt: skip
        got = one.row(0)
        expected = batch.iloc[i].to_dict()
        for key, value in got.items():
            if isinstance(value, float):
                assert value == pytest.approx(expected[key], nan_ok=True, abs=1e-12), (i, key)
            else:
                assert value == expected[key] or (value is None and pd.isna(expected[key])), (i, key)
