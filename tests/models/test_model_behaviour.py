"""Model behaviour on a simulated world: direction, invariance, SHAP additivity, reproducibility, and
LightGBM beating both baselines on the test cutoff (measured here, not hard-coded)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clm.config import load_config
from features.jobs import build_feature_tables
from features.registry import FeatureParams, build_registry
from models.behaviour import check_additivity, check_direction, check_invariance
from models.bundle import bundle_from_model, load_bundle, save_bundle
from models.scoring import contributions, raw_scores, score
from training.dataset import backtest_splits, closed_cutoffs, load_training_frame, monthly_cutoffs, time_split
from training.fit import ModelSpec, fit_fold
from training.truth import read_truth, truth_oracle

CONFIG = load_config()
REGISTRY = build_registry(FeatureParams.from_config(CONFIG.features))


@pytest.fixture(scope="module")
def training_frame(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    cutoffs = monthly_cutoffs(dt.date(2025, 1, 1), dt.date(2025, 10, 28), 60)
    out = tmp_path_factory.mktemp("training")
    summary = build_feature_tables(small_world, cutoffs, out)
    return load_training_frame(summary.features_path, summary.labels_path)


def fit_target(target: str, training_frame: pd.DataFrame, small_world: Path):
    """One fold of the shipped model spec for `target`, with the simulator's truth as its oracle."""
    spec = ModelSpec.from_config(target, getattr(CONFIG.models, target))
    split = time_split(closed_cutoffs(training_frame, target), 30)
    oracle = truth_oracle(read_truth(small_world / "truth"), target)
    return fit_fold(training_frame, split, spec, REGISTRY, seed=0, oracle=oracle)


@pytest.fixture(scope="module")
def churn_fold(training_frame: pd.DataFrame, small_world: Path):
    return fit_target("churn", training_frame, small_world)


@pytest.fixture(scope="module")
def churn_bundle(churn_fold):
    return bundle_from_model(
        churn_fold.model, name="clm-churn", target="churn", feature_version="t", horizon_days=30
    )


def test_split_respects_time(training_frame: pd.DataFrame) -> None:
    split = time_split(closed_cutoffs(training_frame, "churn"), 30)
    assert split.test == max(closed_cutoffs(training_frame, "churn"))
    assert split.valid + dt.timedelta(days=30) <= split.test
    assert all(c + dt.timedelta(days=30) <= split.valid for c in split.train)
    folds = backtest_splits(closed_cutoffs(training_frame, "churn"), 30, 3)
    assert len(folds) == 3 and [f.test for f in folds] == sorted(f.test for f in folds)


def test_lightgbm_beats_both_baselines_and_approaches_the_oracle(churn_fold) -> None:
    m = churn_fold.metrics
    assert m["model"]["roc_auc"] > m["logistic"]["roc_auc"]
    assert m["model"]["roc_auc"] > m["recency_rule"]["roc_auc"]
    assert m["model"]["roc_auc"] <= m["oracle"]["roc_auc"] + 0.02
    assert m["model"]["auc_over_oracle_auc"] > 0.85


def test_calibration_does_not_hurt_brier(churn_fold) -> None:
    m = churn_fold.metrics["model"]
    assert m["brier"] <= m["brier_before_calibration"] + 0.002


@pytest.mark.parametrize("feature", ["days_since_last_event", "days_since_last_login", "gap_ratio"])
def test_more_inactive_days_never_lower_churn_risk(churn_bundle, churn_fold, feature: str) -> None:
    ok, detail = check_direction(churn_bundle, churn_fold.test_frame.head(2000), feature)
    assert ok, detail


def test_renaming_a_user_changes_nothing(churn_bundle, churn_fold) -> None:
    ok, detail = check_invariance(churn_bundle, churn_fold.test_frame.head(500))
    assert ok, detail


def test_shap_contributions_add_up_to_the_raw_score(churn_bundle, churn_fold) -> None:
    rows = churn_fold.test_frame.head(300)
    ok, detail = check_additivity(churn_bundle, rows)
    assert ok, detail
    assert np.abs(contributions(rows, churn_bundle).sum(axis=1) - raw_scores(rows, churn_bundle)).max() < 1e-6


def test_same_seed_and_data_give_the_same_metrics(training_frame: pd.DataFrame, churn_fold) -> None:
    spec = ModelSpec.from_config("churn", CONFIG.models.churn)
    again = fit_fold(training_frame, churn_fold.split, spec, REGISTRY, seed=0)
    assert again.metrics["model"] == {
        k: v for k, v in churn_fold.metrics["model"].items() if k != "auc_over_oracle_auc"
    }


def test_bundle_round_trips_through_disk(churn_bundle, churn_fold, tmp_path: Path) -> None:
    rows = churn_fold.test_frame.head(200)
    loaded = load_bundle(save_bundle(churn_bundle, tmp_path / "bundle"))
    pd.testing.assert_frame_equal(score(rows, churn_bundle), score(rows, loaded))
    (tmp_path / "bundle" / "booster.txt").write_text("not a model")
    with pytest.raises(ValueError, match="cannot load model bundle"):
        load_bundle(tmp_path / "bundle")


def test_upgrade_model_beats_its_baselines(training_frame: pd.DataFrame, small_world: Path) -> None:
    fold = fit_target("upgrade", training_frame, small_world)
    assert fold.metrics["model"]["roc_auc"] > fold.metrics["recency_rule"]["roc_auc"]
    assert fold.metrics["model"]["roc_auc"] > fold.metrics["logistic"]["roc_auc"], fold.metrics
    assert fold.metrics["model"]["roc_auc"] > 0.6


def test_tuning_searches_on_validation_and_returns_parameters_from_the_space(
    training_frame: pd.DataFrame,
) -> None:
    from training.tuning import SPACE, tune

    # what is checked (the search's space, its seed) does not depend on the data's size: a fifth of the
    # users, every cutoff, keeps the four fits cheap (they took 65 s on the whole frame, 176 s loaded)
    users = np.sort(training_frame["user_id"].unique())[::5]
    frame = training_frame[training_frame["user_id"].isin(users)]
    spec = ModelSpec.from_config("churn", CONFIG.models.churn)
    split = time_split(closed_cutoffs(frame, "churn"), 30)
    best = tune(frame, split, spec, REGISTRY, trials=2, seed=3)
    assert set(best) == set(SPACE)
    assert all(best[name] in SPACE[name] for name in SPACE)
    assert best == tune(frame, split, spec, REGISTRY, trials=2, seed=3)  # seeded
