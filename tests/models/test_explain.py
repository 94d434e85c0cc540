"""Population explanations (`clm score --explain`, the decision cache) list, for every user of the served
world, the features and reasons the API's one-row explanation lists, in both languages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clm.config import load_config
from features.online import open_store
from models.decision import load_decision_models
from models.explain import population_contributions, reason_columns
from serving.scorer import Scorer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_population_reasons_are_the_apis_reasons_for_every_user(served_world, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served_world.tracking_uri)
    config = load_config()
    models = load_decision_models(config, aliases=("champion",))
    with open_store(served_world.store_url) as store:
        rows = store.read_many(served_world.user_ids)
    user_ids = list(rows)
    frame = pd.DataFrame([rows[u].values for u in user_ids]).assign(user_id=user_ids)
    decisions = models.decide(frame).decisions
    explained = population_contributions(frame, models, decisions, config.serving.explain_top_k)
    columns = reason_columns(frame, explained, models.registry, currency=models.policy.value.currency)
    assert set(explained) == {"reactivation", "churn", "upgrade"}
    assert columns["reactivation_top_features"].count(None) == int((~decisions.lapsed).sum()) > 0
    scorer = Scorer(config.serving)
    differences = []
    for i, user_id in enumerate(user_ids):
        for lang in ("en", "zh"):
            decision = scorer.decide(
                models, rows[user_id].values, user_id=user_id, as_of=None, lang=lang
            ).decision
            for target, explanation in decision.explanations.items():
                names = ";".join(c.feature for c in explanation.top)
                reasons = " | ".join(c.reason for c in explanation.top)
                if (columns[f"{target}_top_features"][i], columns[f"{target}_reasons_{lang}"][i]) != (
                    names,
                    reasons,
                ):
                    differences.append((user_id, target, lang))
                k = explained[target].position()[i]
                assert np.isclose(explained[target].values[k].sum(), explanation.raw_score, rtol=1e-12)
    assert not differences, differences[:5]
