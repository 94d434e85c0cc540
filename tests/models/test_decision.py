"""The one decision path on the served world (models and policy trained, registered and @champion): the
loader by alias, the one version-label format, the budget plan, and the API's one-row decision equal to
the population decision for every user in the online store."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re

import numpy as np
import pandas as pd
import pytest

from clm.config import load_config
from features.online import open_store
from models.arbitration import ELIGIBLE, plan_within_budget
from models.decision import DecisionModels, ModelsMissing, decide_population, load_decision_models
from serving.scorer import Scorer
from tests.conftest import ServedWorld

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def champion(served_world: ServedWorld) -> DecisionModels:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", served_world.tracking_uri)
        return load_decision_models(load_config(), aliases=("champion",))


@pytest.fixture(scope="module")
def store_rows(served_world: ServedWorld) -> dict[str, dict]:
    """Every user's feature vector as the API reads it (the online store's snapshot)."""
    with open_store(served_world.store_url) as store:
        rows = store.read_many(store.user_ids())
    return {user_id: row.values for user_id, row in rows.items()}


def test_the_loader_gives_one_frozen_set_with_the_apis_version_labels(champion: DecisionModels) -> None:
    labels = champion.version_labels()
    assert set(labels) == {"churn_model", "upgrade_model", "reactivation_model", "policy", "features"}
    assert re.fullmatch(r"clm-churn/\d+", labels["churn_model"])
    assert re.fullmatch(r"clm-reactivation/\d+", labels["reactivation_model"])
    assert re.fullmatch(r"clm-policy/\d+", labels["policy"])
    assert labels["features"] == champion.policy.feature_version
    assert champion.described(champion.policy) == f"{labels['policy']} @champion"
    assert champion.scoring_labels()["upgrade"] == f"{labels['upgrade_model']} @champion"
    with pytest.raises(AttributeError):
        champion.alias = "challenger"  # type: ignore[misc]


def test_the_loader_names_the_missing_model_and_the_command_that_trains_it(
    served_world: ServedWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served_world.tracking_uri)
    with pytest.raises(
        ModelsMissing, match=r"no clm-churn model registered \(@nope\): run `clm train --model churn`"
    ):
        load_decision_models(load_config(), aliases=("nope",))
    # a fallback alias is taken per model, and recorded beside its version
    fallback = load_decision_models(load_config(), aliases=("nope", "champion"))
    assert fallback.alias == "nope" and set(fallback.found_under.values()) == {"champion"}
    assert fallback.described(fallback.churn).endswith(" @champion")


def test_a_budget_plan_is_the_arbitrations_plan_within_it(champion: DecisionModels, store_rows) -> None:
    # one snapshot (the frame `clm score` reads carries its cutoff): one plan over every user
    frame = pd.DataFrame(list(store_rows.values())).assign(
        user_id=list(store_rows), cutoff=pd.Timestamp("2025-09-01")
    )
    free = decide_population(frame, champion.churn, champion.upgrade, champion.policy)
    budget = float(free.table["cost"].sum()) / 2
    planned = champion.decide(frame, budget=budget, budget_method="greedy")
    arb = free.decisions.arbitration
    costs = np.array([a.cost for a in champion.policy.catalog])
    expected = plan_within_budget(arb.value, arb.status == ELIGIBLE, costs, budget, method="greedy")
    assert np.array_equal(planned.plan.chosen, expected.chosen)
    assert planned.table["cost"].sum() <= budget + 1e-6
    assert planned.table["budget_dropped"].any()
    assert (planned.table["propensity"] == 1.0).all() and not planned.table["explored"].any()
    assert list(planned.table["user_id"]) == list(frame["user_id"])
    assert (planned.table["cutoff"] == pd.Timestamp("2025-09-01")).all()
    # several snapshots are decided apart, and a budget cannot span them
    two = pd.concat([frame, frame.assign(cutoff=pd.Timestamp("2025-08-01"))], ignore_index=True)
    assert decide_population(two, champion.churn, champion.upgrade, champion.policy).decisions is None
    with pytest.raises(ValueError, match="several cutoffs"):
        champion.decide(two, budget=budget)


def _same(one: object, other: object) -> bool:
    if isinstance(one, float) or isinstance(other, float):
        if one is None or other is None:
            return one is other
        return math.isclose(float(one), float(other), rel_tol=1e-9, abs_tol=1e-12) or (
            math.isnan(float(one)) and math.isnan(float(other))
        )
    return one == other


def test_the_one_row_decision_equals_the_population_decision_for_every_user(
    champion: DecisionModels, store_rows: dict[str, dict]
) -> None:
    """The API decides one row at a time (numpy encoding, one thread); batch scoring, the report, the
    evaluation and the reviewer overview decide the whole frame. They must agree on every user."""
    user_ids = list(store_rows)
    frame = pd.DataFrame([store_rows[u] for u in user_ids]).assign(user_id=user_ids)
    population = champion.decide(frame)
    table, decisions = population.table, population.decisions
    assert decisions is not None and len(table) == len(user_ids) > 1000
    scorer = Scorer(load_config().serving)
    differences = []
    for i, user_id in enumerate(user_ids):
        decided = scorer.decide(champion, store_rows[user_id], user_id=user_id, as_of=None)
        decision = decided.decision
        row = table.iloc[i]
        one = {
            "stage": decision.stage.name, "stage_rule": decision.stage.rule,
            "p_churn": decision.churn.probability, "p_upgrade": decision.upgrade.probability,
            "clv": decision.clv, "upgrade_value": decision.upgrade.value, "action": decision.action.name,
            "expected_value": decision.action.expected_value, "delta_stay": decision.action.delta_stay,
            "delta_upgrade": decision.action.delta_upgrade, "value_if_retained": decision.value.value_if_retained,
            "cost": decision.action.cost,
            "scored_by": "reactivation" if decision.churn.scored_by.startswith("clm-reactivation/") else "churn",
        }  # fmt: skip
        for key, value in one.items():
            if not _same(value, row[key].item() if hasattr(row[key], "item") else row[key]):
                differences.append((user_id, key, value, row[key]))
        batch_candidates = decisions.candidates(i)
        served = decided.candidates
        assert len(served) == len(batch_candidates), user_id
        for alt, candidate in zip(served, batch_candidates, strict=True):
            for key in ("name", "status", "expected_value", "delta_stay", "delta_stay_se", "delta_upgrade",
                        "value_if_retained", "retention_value", "upgrade_gain", "cost", "source", "reason"):  # fmt: skip
                if not _same(alt[key], candidate[key]):
                    differences.append((user_id, f"candidate {alt['name']} {key}", alt[key], candidate[key]))
    assert not differences, differences[:10]


def test_no_probability_is_exactly_0_or_1_over_a_scored_world(champion: DecisionModels, store_rows) -> None:
    """Bounded calibration: every model on every user of the world, and the decided churn probability."""
    from models.scoring import score

    frame = pd.DataFrame(list(store_rows.values())).assign(user_id=list(store_rows))
    for bundle in (champion.churn, champion.upgrade, champion.reactivation):
        p = score(frame, bundle)["probability"].to_numpy()
        assert ((p > 0.0) & (p < 1.0)).all(), (bundle.name, int((p <= 0).sum()), int((p >= 1).sum()))
    table = champion.decide(frame).table
    assert ((table["p_churn"] > 0) & (table["p_churn"] < 1)).all()


def test_lapsed_users_are_scored_by_the_reactivation_model_and_the_decision_says_so(
    champion: DecisionModels, store_rows
) -> None:
    from models.population import lapsed

    user_ids = list(store_rows)
    frame = pd.DataFrame([store_rows[u] for u in user_ids]).assign(user_id=user_ids)
    gone = lapsed(frame, champion.churn.horizon_days)
    assert (
        champion.churn.metadata["population"] == "alive"
        and champion.reactivation.metadata["population"] == "lapsed"
    )
    assert gone.sum() > 50 and (~gone).sum() > 50
    table = champion.decide(frame).table
    assert (table.loc[gone, "scored_by"] == "reactivation").all()
    assert (table.loc[~gone, "scored_by"] == "churn").all()
    assert np.allclose(table.loc[gone, "p_churn"], 1.0 - table.loc[gone, "p_return"])
    assert table.loc[~gone, "p_return"].isna().all()
    scorer = Scorer(load_config().serving)
    first_lapsed = user_ids[int(np.flatnonzero(gone)[0])]
    decision = scorer.decide(champion, store_rows[first_lapsed], user_id=first_lapsed, as_of=None).decision
    assert decision.churn.scored_by == champion.label(champion.reactivation)
    assert decision.churn.return_probability == pytest.approx(1.0 - decision.churn.probability)
    assert "reactivation" in decision.explanations and decision.churn.note is None
    # without a reactivation model the churn model scores them, and the decision says so
    alone = dataclasses.replace(champion, reactivation=None)
    fallback = scorer.decide(alone, store_rows[first_lapsed], user_id=first_lapsed, as_of=None).decision
    assert fallback.churn.scored_by == champion.label(champion.churn)
    assert fallback.churn.note and "outside the population" in fallback.churn.note
    assert fallback.versions.reactivation_model is None


def test_the_same_request_twice_gives_the_same_decision_and_propensity(
    champion: DecisionModels, store_rows
) -> None:
    explore = dataclasses.replace(
        champion, policy=dataclasses.replace(champion.policy, contact=dataclasses.replace(
            champion.policy.contact, exploration_share=0.5))
    )  # fmt: skip
    scorer = Scorer(load_config().serving)
    as_of = dt.date(2025, 9, 1)
    explored = 0
    for user_id in list(store_rows)[:60]:
        first = scorer.decide(explore, store_rows[user_id], user_id=user_id, as_of=as_of, explore=True)
        again = scorer.decide(explore, store_rows[user_id], user_id=user_id, as_of=as_of, explore=True)
        assert first.decision.action.name == again.decision.action.name
        assert first.propensity == again.propensity and first.explored == again.explored
        explored += first.explored
    assert 10 < explored < 50  # about half explored: the draw is a hash, not a constant
    # the batch path draws the same for the same user, snapshot and policy version
    frame = pd.DataFrame(list(store_rows.values())).assign(user_id=list(store_rows), cutoff=as_of)
    table = explore.decide(frame, explore=True).table
    for i, user_id in enumerate(list(store_rows)[:60]):
        one = scorer.decide(explore, store_rows[user_id], user_id=user_id, as_of=as_of, explore=True)
        assert (
            table["action"].iloc[i] == one.decision.action.name and table["explored"].iloc[i] == one.explored
        )
