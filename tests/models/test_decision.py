"""The one decision path on the served world (models and policy trained, registered and @champion): the
loader by alias, the one version-label format, the budget plan, and the API's one-row decision equal to
the population decision for every user in the online store."""

from __future__ import annotations

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
    assert set(labels) == {"churn_model", "upgrade_model", "policy", "features"}
    assert re.fullmatch(r"clm-churn/\d+", labels["churn_model"])
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
    population = decide_population(frame, champion.churn, champion.upgrade, champion.policy)
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
            "expected_value": decision.action.expected_value, "uplift": decision.action.uplift,
            "cost": decision.action.cost,
        }  # fmt: skip
        for key, value in one.items():
            if not _same(value, row[key].item() if hasattr(row[key], "item") else row[key]):
                differences.append((user_id, key, value, row[key]))
        batch_candidates = decisions.candidates(i)
        served = decided.candidates
        assert len(served) == len(batch_candidates), user_id
        for alt, candidate in zip(served, batch_candidates, strict=True):
            for key in ("name", "status", "expected_value", "uplift", "cost", "source", "reason"):
                if not _same(alt[key], candidate[key]):
                    differences.append((user_id, f"candidate {alt['name']} {key}", alt[key], candidate[key]))
    assert not differences, differences[:10]
