"""How well a score ranks users by the benefit of a contact: Qini curve and coefficient, AUUC, and uplift
per decile, from a randomised (or inverse-propensity-weighted) holdout.

Conventions shared by every function here:
- `benefit_score`: higher = more expected benefit (e.g. −predicted change in churn); users are targeted
  from the highest score down. Tied scores are targeted together: the curves have one point per distinct
  score, so the result never depends on the order of tied rows.
- `treated`: 1 = contacted, 0 = control; `outcome`: 1 = the desired event (e.g. retained = 1 − churn).
- `weights` (optional, e.g. 1/propensity): every count becomes a sum of weights; weights of 1 give the
  unweighted figures exactly.
- x is the fraction of the (weighted) population targeted; curves start at (0, 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

ArrayLike = Sequence[float] | np.ndarray | pd.Series


def _inputs(
    benefit_score: ArrayLike, treated: ArrayLike, outcome: ArrayLike, weights: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    score = np.asarray(benefit_score, dtype=float)
    t = np.asarray(treated, dtype=float)
    y = np.asarray(outcome, dtype=float)
    w = np.ones(len(score)) if weights is None else np.asarray(weights, dtype=float)
    if not len(score) == len(t) == len(y) == len(w):
        raise ValueError(
            f"lengths differ: score {len(score)}, treated {len(t)}, outcome {len(y)}, weights {len(w)}"
        )
    if len(score) == 0:
        raise ValueError("no rows")
    if np.isnan(score).any():
        raise ValueError("benefit_score has missing values")
    for name, values in (("treated", t), ("outcome", y)):
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError(f"{name} must be 0 or 1")
    if not (np.isfinite(w).all() and (w >= 0).all()) or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return score, t, y, w


def _cumulative(
    score: np.ndarray, t: np.ndarray, y: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Targeted weight, treated weight, treated positives, control weight, control positives — cumulated
    from the highest score down, one entry per distinct score, with a leading zero."""
    order = np.argsort(-score, kind="mergesort")
    score, t, y, w = score[order], t[order], y[order], w[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(score) != 0), len(score) - 1]

    def cum(values: np.ndarray) -> np.ndarray:
        return np.r_[0.0, np.cumsum(values)[last_of_tie]]

    return cum(w), cum(w * t), cum(w * t * y), cum(w * (1 - t)), cum(w * (1 - t) * y)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def qini_curve(
    benefit_score: ArrayLike, treated: ArrayLike, outcome: ArrayLike, weights: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Radcliffe's Qini curve: x = fraction targeted, y = (n_t1(k) − n_c1(k)·n_t(k)/n_c(k)) / N — the
    incremental desired outcomes among the top k, per user of the population (the control term is 0 while
    no control user is targeted yet)."""
    score, t, y, w = _inputs(benefit_score, treated, outcome, weights)
    n, n_t, n_t1, n_c, n_c1 = _cumulative(score, t, y, w)
    total = n[-1]
    return n / total, (n_t1 - n_c1 * _ratio(n_t, n_c)) / total


def qini_coefficient(
    benefit_score: ArrayLike, treated: ArrayLike, outcome: ArrayLike, weights: ArrayLike | None = None
) -> float:
    """Radcliffe's normalised Qini: (area between the Qini curve and the random line) / (the same area for
    the perfect ranking). The random line joins (0, 0) to the curve's end; the perfect ranking targets
    treated users with the outcome first, then everyone without it, control users with it last (sklift's
    `qini_auc_score(negative_effect=True)`). 1 = perfect, ≈0 = random, < 0 = worse than random; NaN when
    the perfect ranking does not beat random (no room to rank)."""
    score, t, y, w = _inputs(benefit_score, treated, outcome, weights)
    x, q = qini_curve(score, t, y, w)
    random_area = q[-1] / 2.0
    x_best, q_best = qini_curve(y * t - y * (1 - t), t, y, w)
    best = _area(x_best, q_best) - random_area
    if best <= 0:
        return float("nan")
    return (_area(x, q) - random_area) / best


def uplift_curve(
    benefit_score: ArrayLike, treated: ArrayLike, outcome: ArrayLike, weights: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """x = fraction targeted, y = (rate_t(k) − rate_c(k)) · x: the uplift among the top k times the share
    targeted (a group with no one in it yet has rate 0)."""
    score, t, y, w = _inputs(benefit_score, treated, outcome, weights)
    n, n_t, n_t1, n_c, n_c1 = _cumulative(score, t, y, w)
    x = n / n[-1]
    return x, (_ratio(n_t1, n_t) - _ratio(n_c1, n_c)) * x


def auuc(
    benefit_score: ArrayLike, treated: ArrayLike, outcome: ArrayLike, weights: ArrayLike | None = None
) -> float:
    """Area under the uplift curve (`uplift_curve`) over x ∈ [0, 1], by trapezoids; not normalised by a
    perfect ranking. Units are the outcome's rate: a random score gives about ATE/2 (the area under the line
    from (0, 0) to (1, ATE)), so compare scores on the same data, not across data sets."""
    x, u = uplift_curve(benefit_score, treated, outcome, weights)
    return _area(x, u)


def uplift_by_decile(benefit_score: ArrayLike, treated: ArrayLike, outcome: ArrayLike) -> pd.DataFrame:
    """Users cut into ten equal-count groups by score (decile 1 = highest score; ties broken by input
    order), with each group's treated and control counts, outcome rates and uplift = rate difference
    (NaN where a group has no treated or no control user). Fewer than ten rows give fewer deciles."""
    score, t, y, _ = _inputs(benefit_score, treated, outcome, None)
    order = np.argsort(-score, kind="mergesort")
    rows = []
    for decile, members in enumerate(np.array_split(order, 10), start=1):
        if len(members) == 0:
            continue
        t_m, y_m = t[members], y[members]
        n_treated, n_control = int(t_m.sum()), int(len(members) - t_m.sum())
        rate_treated = float(y_m[t_m == 1].mean()) if n_treated else np.nan
        rate_control = float(y_m[t_m == 0].mean()) if n_control else np.nan
        rows.append((decile, n_treated, n_control, rate_treated, rate_control, rate_treated - rate_control))
    return pd.DataFrame(
        rows, columns=["decile", "n_treated", "n_control", "rate_treated", "rate_control", "uplift"]
    )
