"""Baselines every model is reported against: a plain logistic regression, a no-model recency rule and,
for churn, the BG/NBD "buy till you die" model.

A gradient-boosted model earns its complexity only by beating these on the same rows. Both are built
from the same feature frame the model sees, and both return scores that go through the same metrics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from models.btyd import BGNBD, fit_bgnbd, rfm_summary

RECENCY_COLUMN = "days_since_last_event"


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not isinstance(series.dtype, pd.CategoricalDtype)


def _numeric_as_float(frame: pd.DataFrame) -> np.ndarray:
    """Numeric columns (nullable ints and booleans included) as float64, pd.NA as NaN."""
    return frame.astype("float64").to_numpy()


def _categorical_as_object(frame: pd.DataFrame) -> np.ndarray:
    """Category/string columns as object strings with NaN for missing, so one imputer handles all."""
    as_object = frame.astype(object)
    return as_object.where(as_object.notna(), np.nan).to_numpy()


def _as_strings(values: np.ndarray) -> np.ndarray:
    """After imputation: one type per column (an all-missing column was filled with 0, not a string)."""
    return np.asarray(values).astype(str)


def _preprocessor(X: pd.DataFrame) -> ColumnTransformer:
    numeric = [column for column in X.columns if _is_numeric(X[column])]
    categorical = [column for column in X.columns if column not in numeric]
    transformers: list[tuple[str, Pipeline, list[str]]] = []
    if numeric:
        numeric_steps = Pipeline(
            [
                ("to_float", FunctionTransformer(_numeric_as_float, feature_names_out="one-to-one")),
                # keep_empty_features: an all-NaN column (a feature absent in this business) stays in
                # the design matrix as a constant instead of changing its width at predict time.
                ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]
        )
        transformers.append(("numeric", numeric_steps, numeric))
    if categorical:
        categorical_steps = Pipeline(
            [
                ("to_object", FunctionTransformer(_categorical_as_object, feature_names_out="one-to-one")),
                ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
                ("to_string", FunctionTransformer(_as_strings, feature_names_out="one-to-one")),
                ("one_hot", OneHotEncoder(handle_unknown="ignore")),
            ]
        )
        transformers.append(("categorical", categorical_steps, categorical))
    if not transformers:
        raise ValueError("X has no columns to fit a baseline on")
    return ColumnTransformer(transformers, remainder="drop")


def fit_logistic_baseline(X: pd.DataFrame, y: object, *, random_state: int = 0) -> Pipeline:
    """A fitted logistic-regression pipeline over the model's features.

    Numeric columns: median imputation with missing-value indicators, then standard scaling.
    Category/object/string columns: most-frequent imputation, then one-hot (unknown values at predict
    time encode as all zeros). Classes are balanced, so scores rank well but are not calibrated.
    """
    labels = np.asarray(y).ravel()
    if len(labels) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(labels)}")
    if np.unique(labels).size < 2:
        raise ValueError("the logistic baseline needs both classes in y")
    pipeline = Pipeline(
        [
            ("preprocess", _preprocessor(X)),
            (
                "classifier",
                LogisticRegression(max_iter=1000, class_weight="balanced", random_state=random_state),
            ),
        ]
    )
    return pipeline.fit(X, labels)


def recency_rule_scores(
    X: pd.DataFrame,
    column: str = RECENCY_COLUMN,
    *,
    missing_fill: float | None = None,
) -> np.ndarray:
    """The no-model rule "the longer since the last event, the higher the risk", as a ranking score.

    The score is the recency in days itself. It is a ranking, not a probability: use it as is for AUC,
    lift and recall, and pass it through `rule_probability` before Brier or ECE. A missing recency (no
    event yet) counts as the longest recency seen in `X`, or `missing_fill` when given — pass the
    training maximum to score another frame consistently. All missing and no fill gives zeros.
    """
    if column not in X.columns:
        raise KeyError(f"recency rule needs column {column!r}, which X does not have")
    recency = pd.to_numeric(X[column], errors="coerce").astype("float64").to_numpy()
    if missing_fill is None:
        seen = recency[~np.isnan(recency)]
        missing_fill = float(seen.max()) if seen.size else 0.0
    return np.where(np.isnan(recency), missing_fill, recency)


def rule_probability(scores_train: object, y_train: object, scores_eval: object) -> np.ndarray:
    """Calibrate a ranking score into probabilities with isotonic regression fitted on training rows.

    A plain empirical-CDF map would land in [0, 1] but would say nothing about the churn rate, so
    Brier and ECE of it would be meaningless; isotonic regression maps each score to the observed
    positive rate of its neighbourhood and keeps the order (non-decreasing in the score). Scores
    outside the training range take the nearest end's rate; NaN scores take the highest training
    score's rate, like a missing recency in the rule.
    """
    train = np.asarray(scores_train, dtype="float64").ravel()
    labels = np.asarray(y_train, dtype="float64").ravel()
    if train.size != labels.size:
        raise ValueError(f"scores_train has {train.size} rows but y_train has {labels.size}")
    if train.size == 0 or np.isnan(train).all():
        raise ValueError("rule_probability needs at least one scored training row")
    known = ~np.isnan(train)
    calibrator = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    calibrator.fit(train[known], labels[known])
    evaluate = np.asarray(scores_eval, dtype="float64").ravel()
    evaluate = np.where(np.isnan(evaluate), train[known].max(), evaluate)
    return calibrator.predict(evaluate).astype("float64")


def bgnbd_baseline(
    train: pd.DataFrame,
    evaluate: pd.DataFrame,
    *,
    horizon_days: int,
    activity: str = "any",
    population: pd.DataFrame | None = None,
) -> tuple[BGNBD, np.ndarray]:
    """BG/NBD fitted at the training cutoffs, and each evaluated row's probability of no transaction
    within the horizon (the non-contractual churn label's event; `activity` is the label's
    `non_contractual_activity`).

    It is fitted on `population` (x, t_x, T of every user known at each training cutoff, see
    `training.btyd.population_summaries`) restricted to the cutoffs of `train`. Without it, on the
    training rows themselves — which leave out users already silent for the horizon, so the fit sees
    almost no drop-outs (on the demo world the drop-out parameter a fell to 0 and the AUC by 0.06).
    """
    if population is not None:
        fitted_on = population[population["cutoff"].isin(set(train["cutoff"]))]
        if fitted_on.empty:
            raise ValueError("the BG/NBD population has no row at the training cutoffs")
    else:
        fitted_on = rfm_summary(train, activity)
    model = fit_bgnbd(fitted_on["x"], fitted_on["t_x"], fitted_on["T"])
    rows = rfm_summary(evaluate, activity)
    return model, model.p_no_transaction(rows["x"], rows["t_x"], rows["T"], horizon_days)
