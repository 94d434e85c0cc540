"""Fit one target on one split and evaluate it beside its baselines (and the oracle on simulated data).
Pure: frames and parameters in, results out; the job does the logging."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.registry import Feature
from models.config import PropensityModelSection
from models.frame import category_lists
from models.metrics import classification_metrics, expected_calibration_error, slice_metrics, tenure_band
from models.propensity import Calibrator, PropensityModel
from training.baselines import bgnbd_baseline, fit_logistic_baseline, recency_rule_scores, rule_probability
from training.dataset import Split, validation_users


@dataclass(frozen=True)
class ModelSpec:
    """The config's `[models.<target>]` table."""

    target: str
    registered_name: str
    params: Mapping[str, Any]
    num_boost_round: int = 1000
    early_stopping_rounds: int = 50
    monotone: bool = False
    # pseudo-rows at the base rate added to each isotonic block (models.propensity.Calibrator)
    calibration_prior_rows: float = 0.0

    @classmethod
    def from_config(cls, target: str, section: PropensityModelSection) -> ModelSpec:
        """One `[models.<target>]` table of the config."""
        return cls(
            target=target,
            registered_name=section.registered_name,
            params=dict(section.params),
            num_boost_round=section.num_boost_round,
            early_stopping_rounds=section.early_stopping_rounds,
            monotone=section.monotone,
            calibration_prior_rows=section.calibration_prior_rows,
        )


@dataclass
class FoldResult:
    split: Split
    model: PropensityModel
    # model | model_uncalibrated | logistic | recency_rule | bgnbd (churn) | oracle
    metrics: dict[str, dict[str, float]]
    test_frame: pd.DataFrame
    test_probability: np.ndarray
    test_uncalibrated: np.ndarray
    baseline_scores: dict[str, np.ndarray] = field(default_factory=dict)
    slices: pd.DataFrame | None = None


def new_model(
    spec: ModelSpec, registry: Sequence[Feature], frame: pd.DataFrame, seed: int, **overrides: Any
) -> PropensityModel:
    names = [f.name for f in registry]
    monotone = (
        {f.name: f.risk_direction for f in registry if f.risk_direction != 0} if spec.monotone else None
    )
    return PropensityModel(
        feature_names=names,
        categories=category_lists(registry, frame),
        params={**spec.params, **overrides.pop("params", {})},
        num_boost_round=overrides.pop("num_boost_round", spec.num_boost_round),
        early_stopping_rounds=spec.early_stopping_rounds,
        monotone=monotone,
        random_state=seed,
        calibration_prior_rows=spec.calibration_prior_rows,
    )


def rows_for(frame: pd.DataFrame, cutoffs: Sequence[dt.date], target: str) -> pd.DataFrame:
    """The labelled rows of the given cutoffs."""
    return frame[frame["cutoff"].isin(set(cutoffs)) & frame[target].notna()]


def split_rows(
    frame: pd.DataFrame, split: Split, target: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The labelled training, validation and test rows of a split; in a single holdout, validation is
    the held-out users' rows at the training cutoffs."""
    test = rows_for(frame, [split.test], target)
    if split.holdout:
        pool = rows_for(frame, (*split.train, split.valid), target)
        held = validation_users(pool["user_id"])
        return pool[~held], pool[held], test
    return rows_for(frame, split.train, target), rows_for(frame, [split.valid], target), test


def fit_fold(
    frame: pd.DataFrame,
    split: Split,
    spec: ModelSpec,
    registry: Sequence[Feature],
    *,
    seed: int = 0,
    oracle: Callable[[pd.DataFrame], np.ndarray | None] | None = None,
    with_slices: bool = False,
    params_override: Mapping[str, Any] | None = None,
    horizon_days: int | None = None,
    transactions: str = "any",
    bgnbd_population: pd.DataFrame | None = None,
) -> FoldResult:
    """Train on the split's training cutoffs, early-stop and calibrate on validation, score the test cutoff.
    Given the horizon, churn is also scored by BG/NBD (P(no `transactions` within it), see
    `training.baselines.bgnbd_baseline`)."""
    target = spec.target
    train, valid, test = split_rows(frame, split, target)
    y_train, y_valid = train[target].astype(float).to_numpy(), valid[target].astype(float).to_numpy()
    y_test = test[target].astype(float).to_numpy()
    model = new_model(spec, registry, train, seed, params=dict(params_override or {}))
    model.fit(train, y_train, valid, y_valid)
    p_test = model.predict_proba(test)[:, 1]
    p_uncal = model.predict_uncalibrated(test)

    names = [f.name for f in registry]
    logistic = fit_logistic_baseline(train[names], y_train, random_state=seed)
    p_logistic = logistic.predict_proba(test[names])[:, 1]
    rule_train = recency_rule_scores(train)
    rule_test = recency_rule_scores(test)
    p_rule = rule_probability(rule_train, y_train, rule_test)

    metrics = {
        "model": classification_metrics(y_test, p_test),
        "model_uncalibrated": classification_metrics(y_test, p_uncal),
        "logistic": classification_metrics(y_test, p_logistic),
        "recency_rule": classification_metrics(y_test, p_rule),
    }
    baseline_scores = {"logistic": p_logistic, "recency_rule": p_rule}
    if target == "churn" and horizon_days is not None:
        bgnbd, p_bgnbd = bgnbd_baseline(
            train, test, horizon_days=horizon_days, activity=transactions, population=bgnbd_population
        )
        fitted = {f"param_{name}": value for name, value in bgnbd.params.items()}
        metrics["bgnbd"] = classification_metrics(y_test, p_bgnbd) | fitted
        baseline_scores["bgnbd"] = p_bgnbd
    metrics["model"]["ece_before_calibration"] = expected_calibration_error(y_test, p_uncal)
    metrics["model"]["brier_before_calibration"] = float(np.mean((p_uncal - y_test) ** 2))
    metrics["model"]["best_iteration"] = float(model.best_iteration_)
    # the same fold under plain isotonic calibration, so the bounded calibration's cost is on record
    plain = Calibrator.fit(model.predict_uncalibrated(valid), y_valid)
    metrics["model"]["ece_plain_isotonic"] = expected_calibration_error(y_test, plain(p_uncal))
    if oracle is not None:
        p_oracle = oracle(test)
        if p_oracle is not None:
            ok = ~np.isnan(p_oracle)
            metrics["oracle"] = classification_metrics(y_test[ok], p_oracle[ok])
            model_on_same = classification_metrics(y_test[ok], p_test[ok])
            metrics["model"]["auc_over_oracle_auc"] = model_on_same["roc_auc"] / metrics["oracle"]["roc_auc"]
    slices = None
    if with_slices:
        slice_columns = {
            "plan": test["current_plan"].astype("object") if "current_plan" in test else None,
            "tenure_band": tenure_band(test["tenure_days"]) if "tenure_days" in test else None,
            "rfm_segment": test["rfm_segment"].astype("object") if "rfm_segment" in test else None,
        }
        if "latent_stage" in test:
            slice_columns["stage"] = test["latent_stage"]
        slices = slice_metrics(
            y_test, p_test, {k: v.reset_index(drop=True) for k, v in slice_columns.items() if v is not None}
        )
    return FoldResult(
        split=split,
        model=model,
        metrics=metrics,
        test_frame=test,
        test_probability=p_test,
        test_uncalibrated=p_uncal,
        baseline_scores=baseline_scores,
        slices=slices,
    )
