"""The simulator's margin truth: the backward recursion against forward propagation, hand-computed chains,
the ranking of a helpful and a harmful contact for dormant users, and the truth against the margin users
actually produced in a world without campaigns."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulation.io import simulate_to_directory
from simulation.params import CHURNED, DECLINING, MATURE, PLAN_PRICES, SimulationParams
from simulation.truth import Economy, Laws, MarginParams, expected_margins, margin_step, margin_to_go
from simulation.world import TRANSITIONS

START = dt.date(2025, 1, 1)
K = len(TRANSITIONS)


def _economy(n: int, rng: np.random.Generator | None = None) -> Economy:
    if rng is None:  # no purchases: revenue is the plan price alone
        return Economy(
            np.zeros((1, n)), np.zeros((2, 6, 1, n)), np.zeros((3, 1, n)), np.asarray(PLAN_PRICES) / 30, 0.9
        )
    return Economy(
        rng.uniform(0, 0.05, (1, n)), rng.uniform(0, 1, (2, 6, 1, n)), rng.uniform(0, 5, (3, 1, n)),
        np.asarray(PLAN_PRICES) / 30, float(np.exp(-1 / 14)),
    )  # fmt: skip


def _laws(n: int, scenarios: int, rng: np.random.Generator) -> Laws:
    upgrade = np.concatenate([rng.uniform(0, 0.05, (2, 6, scenarios, n)), np.zeros((1, 6, scenarios, n))])
    return Laws(rng.uniform(0, 0.08, (K, scenarios, n)), upgrade)


def _only(**daily: float) -> Laws:
    transitions = np.zeros((K, 1, 1))
    for k, (_, _, name, _) in enumerate(TRANSITIONS):
        transitions[k] = daily.get(name, 0.0)
    return Laws(transitions, np.zeros((3, 6, 1, 1)))


def _start(stage, plan, decayed_start, scenarios):
    n = len(stage)
    mass = np.zeros((6, 3, scenarios, n))
    mass[stage, plan, :, np.arange(n)] = 1.0
    decayed = np.zeros((3, scenarios, n))
    decayed[plan, :, np.arange(n)] = decayed_start[:, None]
    return mass, decayed


def test_backward_recursion_equals_forward_propagation() -> None:
    rng = np.random.default_rng(0)
    n, params = 40, MarginParams(horizon_months=2)
    weights = params.daily_weights()
    laws, economy = _laws(n, 1, rng), _economy(n, rng)
    stage, plan = rng.integers(0, 6, n), rng.integers(0, 3, n)
    decayed_start = np.where(stage == DECLINING, rng.uniform(0, 1, n), 0.0)
    mass, decayed = _start(stage, plan, decayed_start, 1)
    forward = np.zeros((1, n))
    for t in range(len(weights)):
        mass, decayed, revenue = margin_step(mass, decayed, laws, economy, (3 + t) % 7 >= 5)
        forward += weights[t] * revenue
    on_mass, on_decayed = margin_to_go(laws, economy, weights, 3, 0)
    mass, decayed = _start(stage, plan, decayed_start, 1)
    backward = (mass * on_mass).sum(axis=(0, 1)) + (decayed * on_decayed).sum(axis=0)
    np.testing.assert_allclose(backward, forward, rtol=1e-12)
    # an effect window forward, then the backward value: the same as forward all the way
    during = _laws(n, 2, rng)
    split = expected_margins(
        stage, plan, decayed_start, [(during, np.full((2, n), 9))], laws, economy, params, 3
    )[0]
    mass, decayed = _start(stage, plan, decayed_start, 2)
    forward = np.zeros((2, n))
    for t in range(len(weights)):
        mass, decayed, revenue = margin_step(
            mass, decayed, during if t < 9 else laws, economy, (3 + t) % 7 >= 5
        )
        forward += weights[t] * revenue
    np.testing.assert_allclose(split, forward, rtol=1e-12)


def test_a_paying_user_who_stays_earns_the_discounted_plan_margin() -> None:
    params = MarginParams(horizon_months=12, discount_rate_annual=0.1, margin_share=0.7)
    month = np.arange(360) // 30 + 1
    expected = 0.7 * 12.0 / 30 * (1.1 ** (-month / 12)).sum()
    got = expected_margins(
        np.array([MATURE]), np.array([1]), np.zeros(1), [(_only(), np.zeros((1, 1), int))], _only(), _economy(1),
        params, 0,
    )[0]  # fmt: skip
    assert got[0, 0] == pytest.approx(expected)
    assert expected == pytest.approx(0.7 * 12 * 12, rel=0.06)  # about a year of the plan's margin


def test_a_declining_pro_user_pays_while_they_survive() -> None:
    q, params = 0.05, MarginParams(horizon_months=2, discount_rate_annual=0.0, margin_share=1.0)
    laws = _only(declining_churn=q)
    got = expected_margins(
        np.array([DECLINING]), np.array([2]), np.ones(1), [(laws, np.zeros((1, 1), int))], laws, _economy(1),
        params, 0,
    )[0]  # fmt: skip
    survival = (1 - q) ** np.arange(1, 61)  # the stage moves before the day's revenue
    assert got[0, 0] == pytest.approx(39.0 / 30 * survival.sum())


def test_a_dormant_user_is_worth_what_a_return_brings() -> None:
    params = MarginParams(horizon_months=1, discount_rate_annual=0.0, margin_share=1.0)
    laws = _only(churned_return=0.1)
    helped = _only(churned_return=0.3)
    hurt = _only(churned_return=0.02)
    got = expected_margins(
        np.array([CHURNED]), np.array([1]), np.zeros(1), [(laws, np.zeros((1, 1), int)), (helped, np.full((1, 1), 5)),
        (hurt, np.full((1, 1), 5))], laws, _economy(1), params, 0,
    )  # fmt: skip
    alive_days = sum(1 - 0.9 ** (t + 1) for t in range(30))
    assert got[0][0, 0] == pytest.approx(12.0 / 30 * alive_days)
    assert got[1][0, 0] > got[0][0, 0] > got[2][0, 0]


@pytest.fixture(scope="module")
def averse_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Everyone dislikes contact: a win-back still brings dormant users back (return × e^(0.5 + price
    sensitivity)), a satisfaction survey only pushes them away (return × e^−0.5)."""
    out = tmp_path_factory.mktemp("margin") / "averse"
    params = SimulationParams(aversion_rate=1.0, aversion_rate_paid_social=1.0)
    simulate_to_directory(out, n_users=800, days=200, seed=5, start=START, params=params,
                          truth_cutoffs=[dt.date(2025, 6, 1)])  # fmt: skip
    return out


def test_truth_ranks_a_winback_above_a_harmful_contact_for_dormant_users(averse_world: Path) -> None:
    margin = pd.read_parquet(averse_world / "truth" / "margin.parquet")
    stages = pd.read_parquet(averse_world / "truth" / "outcomes.parquet").set_index("user_id")["latent_stage"]
    wide = margin.pivot(index="user_id", columns="action", values="incremental_margin")
    dormant = wide[stages.reindex(wide.index).eq("churned").to_numpy()]
    assert len(dormant) > 30
    assert (dormant["winback_offer"] > dormant["satisfaction_survey"]).all()
    assert (dormant["satisfaction_survey"] < 0).all()
    assert dormant["winback_offer"].mean() > 0


def test_every_user_has_every_action_and_no_action_adds_exactly_nothing(averse_world: Path) -> None:
    margin = pd.read_parquet(averse_world / "truth" / "margin.parquet")
    outcomes = pd.read_parquet(averse_world / "truth" / "outcomes.parquet")
    assert len(margin) == 11 * len(outcomes)
    assert margin.groupby("user_id")["action"].nunique().eq(11).all()
    none = margin[margin["action"] == "no_action"]
    assert (none["incremental_margin"] == 0.0).all()
    assert (margin.groupby("user_id")["baseline_margin"].nunique() == 1).all()
    assert (margin["baseline_margin"] >= 0).all()


def test_truth_matches_the_margin_users_produce_without_campaigns(tmp_path: Path) -> None:
    """Monte Carlo: with no campaign, the mean realised discounted margin over the next 12 30-day months
    (subscriptions pro rata, purchases) is the truth's mean baseline margin within sampling error."""
    cutoff = dt.date(2025, 6, 1)
    out = tmp_path / "w"
    simulate_to_directory(out, n_users=8000, days=152 + 361, seed=3, start=START, truth_cutoffs=[cutoff],
                          params=SimulationParams(campaign_reach=0.0))  # fmt: skip
    truth = pd.read_parquet(out / "truth" / "margin.parquet")
    truth = truth[truth["action"] == "no_action"].set_index("user_id")["baseline_margin"]
    begin = pd.Timestamp(cutoff, tz="UTC")
    discount = 1.1 ** (-np.arange(1, 13) / 12)
    events = pd.read_parquet(out / "events.parquet")
    events = events[(events["event_type"] == "purchase") & (events["ts"] >= begin)]
    month = ((events["ts"] - begin).dt.total_seconds() // (30 * 86400)).astype(int)
    events = events[month < 12]
    realised = (events["amount"] * discount[month[month < 12]]).groupby(events["user_id"]).sum()
    realised = realised.reindex(truth.index, fill_value=0.0)
    subs = pd.read_parquet(out / "subscriptions.parquet")
    for m in range(12):
        lo, hi = begin + pd.Timedelta(days=30 * m), begin + pd.Timedelta(days=30 * (m + 1))
        end = subs["end"].fillna(hi).clip(upper=hi)
        days = ((end - subs["start"].clip(lower=lo)).dt.total_seconds() / 86400).clip(lower=0)
        paid = (subs["mrr"] * days / 30 * discount[m]).groupby(subs["user_id"]).sum()
        realised = realised.add(paid.reindex(truth.index, fill_value=0.0))
    realised *= 0.7
    difference = realised - truth  # paired: the truth explains most of the spread between users
    assert abs(difference.mean()) < 3 * difference.std() / np.sqrt(len(difference))
    assert truth.corr(realised) > 0.6


def test_the_margin_truth_is_written_at_the_last_cutoffs_only(tmp_path: Path) -> None:
    """The margin truth (the simulator's costliest part) is kept to the last `last_cutoffs` truth cutoffs."""
    import pyarrow.parquet as pq

    simulate_to_directory(
        tmp_path, n_users=60, days=200, seed=3, start=START, value_truth=MarginParams(last_cutoffs=1)
    )
    margin_cutoffs = set(pq.read_table(tmp_path / "truth" / "margin.parquet").column("cutoff").to_pylist())
    outcome_cutoffs = sorted(
        set(pq.read_table(tmp_path / "truth" / "outcomes.parquet").column("cutoff").to_pylist())
    )
    assert len(outcome_cutoffs) > 1
    assert margin_cutoffs == {outcome_cutoffs[-1]}
