"""The logistic baseline and the recency rule on small hand-made frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from training.baselines import fit_logistic_baseline, recency_rule_scores, rule_probability


def toy_frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Churners are silent longer and mostly on the free plan; plus an all-missing column."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    recency = np.where(y == 1, rng.uniform(20, 60, rows), rng.uniform(0, 30, rows))
    recency[rng.random(rows) < 0.1] = np.nan
    plan = np.where(rng.random(rows) < 0.8, np.where(y == 1, "free", "pro"), "basic")
    X = pd.DataFrame(
        {
            "days_since_last_event": recency,
            "logins_30d": pd.array(rng.integers(0, 5, rows), dtype="Int64"),
            "support_tickets_90d": np.nan,
            "plan": pd.Categorical(plan),
            "channel": pd.Series(rng.choice(["ads", "organic", None], rows), dtype="str"),
        }
    )
    return X, y


def test_logistic_baseline_beats_random_on_a_separable_toy_set() -> None:
    X_train, y_train = toy_frame(300, seed=1)
    X_test, y_test = toy_frame(200, seed=2)
    model = fit_logistic_baseline(X_train, y_train)
    auc = roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
    random_auc = roc_auc_score(y_test, np.random.default_rng(3).random(len(y_test)))
    assert auc > 0.9
    assert auc > random_auc + 0.3


@pytest.mark.filterwarnings("error")  # not even a "skipping features without observed values" warning
def test_logistic_baseline_survives_all_nan_columns_and_unseen_categories() -> None:
    X_train, y_train = toy_frame(200, seed=4)
    model = fit_logistic_baseline(X_train, y_train)
    X_new = X_train.head(5).copy()
    X_new["plan"] = pd.Categorical(["enterprise"] * 5)  # a plan never seen in training
    X_new["channel"] = pd.Series(["tv"] * 5, dtype="str")
    X_new["support_tickets_90d"] = [1.0, 2.0, np.nan, 0.0, 3.0]  # was all missing in training
    X_new["days_since_last_event"] = np.nan
    probabilities = model.predict_proba(X_new)[:, 1]
    assert probabilities.shape == (5,)
    assert np.isfinite(probabilities).all()
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_logistic_baseline_is_reproducible_and_needs_both_classes() -> None:
    X, y = toy_frame(150, seed=5)
    first = fit_logistic_baseline(X, y, random_state=7).predict_proba(X)
    second = fit_logistic_baseline(X, y, random_state=7).predict_proba(X)
    np.testing.assert_array_equal(first, second)
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic_baseline(X, np.zeros(len(X)))


def test_recency_rule_scores_are_the_recency_with_missing_as_the_max_seen() -> None:
    X = pd.DataFrame({"days_since_last_event": [3.0, np.nan, 40.0, 7.0]})
    np.testing.assert_array_equal(recency_rule_scores(X), [3.0, 40.0, 40.0, 7.0])
    np.testing.assert_array_equal(recency_rule_scores(X, missing_fill=90.0), [3.0, 90.0, 40.0, 7.0])
    other = pd.DataFrame({"gap": [1.0, 2.0]})
    np.testing.assert_array_equal(recency_rule_scores(other, column="gap"), [1.0, 2.0])
    with pytest.raises(KeyError, match="days_since_last_event"):
        recency_rule_scores(other)


def test_recency_rule_ranks_the_toy_set() -> None:
    X, y = toy_frame(300, seed=6)
    assert roc_auc_score(y, recency_rule_scores(X)) > 0.7


def test_rule_probability_is_monotone_bounded_and_calibrated_on_training_rows() -> None:
    X, y = toy_frame(400, seed=8)
    scores = recency_rule_scores(X)
    grid = np.linspace(-10, 100, 221)  # beyond both ends of the training range
    probabilities = rule_probability(scores, y, grid)
    assert np.all(np.diff(probabilities) >= 0)
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    assert probabilities[-1] > probabilities[0]
    # Isotonic regression preserves the mean on the rows it was fitted on.
    assert rule_probability(scores, y, scores).mean() == pytest.approx(y.mean())


def test_rule_probability_treats_a_missing_score_as_the_highest() -> None:
    train = np.array([1.0, 2.0, 3.0, 4.0])
    probabilities = rule_probability(train, [0, 0, 1, 1], [np.nan, 4.0, 1.0])
    assert probabilities.tolist() == [1.0, 1.0, 0.0]
