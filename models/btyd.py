"""The BG/NBD "buy till you die" model (Fader, Hardie & Lee 2005, "Counting your customers the easy way"):
a non-contractual baseline for churn and a source of candidate features.

While alive a customer transacts as a Poisson process with rate λ ~ Gamma(r, α); after every transaction
they drop out for good with probability p ~ Beta(a, b). A customer is summarised by `x` (repeat
transactions after the first), `t_x` (time of the last one since the first) and `T` (time since the
first), all in days here. The likelihood, P(alive), the expected number of transactions and the
probability of none within a horizon are closed forms; the four parameters are fitted by maximum
likelihood with scipy.

Why not a library: lifetimes (last release 2020) is unmaintained, btyd is a 2022 alpha that pulls the
retired aesara, and pymc-marketing resolves here only to an old release that downgrades shap and brings
pytensor and PyMC (a compiler and MCMC for a four-parameter maximum likelihood). The closed forms are
short, and the tests check them against a process with known parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

# Activity that keeps a customer alive, as in the churn label's `non_contractual_activity`.
ACTIVITY_COLUMNS: Mapping[str, tuple[str, str]] = {
    # activity: (count of transactions ever, days since the last one)
    "any": ("active_days_total", "days_since_last_event"),
    "purchase": ("purchase_count_total", "days_since_last_purchase"),
}


def rfm_summary(frame: pd.DataFrame, activity: str = "any") -> pd.DataFrame:
    """(x, t_x, T) in days per row of a feature frame, from registry features only (so as of each cutoff).

    T is the tenure (days since signup or the first event); a transaction is an active day (`activity =
    "any"`) or a purchase (`"purchase"`). Rows without any transaction have x = t_x = 0.
    """
    if activity not in ACTIVITY_COLUMNS:
        raise ValueError(f"activity must be one of {', '.join(ACTIVITY_COLUMNS)}, got {activity!r}")
    count_column, recency_column = ACTIVITY_COLUMNS[activity]
    missing = [c for c in ("tenure_days", count_column, recency_column) if c not in frame.columns]
    if missing:
        raise KeyError(
            f"the BG/NBD summary needs columns {', '.join(missing)}, which the frame does not have"
        )
    T = pd.to_numeric(frame["tenure_days"], errors="coerce").astype("float64").to_numpy()
    count = pd.to_numeric(frame[count_column], errors="coerce").astype("float64").fillna(0.0).to_numpy()
    recency = pd.to_numeric(frame[recency_column], errors="coerce").astype("float64").to_numpy()
    T = np.where(np.isnan(T) | (T <= 0), 1.0, T)
    bought = (count > 0) & ~np.isnan(recency)
    x = np.where(bought, np.maximum(count - 1.0, 0.0), 0.0)
    t_x = np.where(bought & (x > 0), np.clip(T - recency, 0.0, T), 0.0)
    return pd.DataFrame({"x": x, "t_x": t_x, "T": T}, index=frame.index)


def log_likelihood(
    params: tuple[float, float, float, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """The BG/NBD log-likelihood of each customer's (x, t_x, T) under (r, α, a, b)."""
    r, alpha, a, b = params
    x, t_x, T = (np.asarray(v, dtype="float64") for v in (x, t_x, T))
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    a4 = np.full_like(x, -np.inf)
    a4[repeat] = np.log(a) - np.log(b + x[repeat] - 1.0) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    # B(a+1, b+x−1) = B(a, b+x) · a/(b+x−1): both terms share a1 + a2
    return a1 + a2 + np.logaddexp(a3, a4)


@dataclass(frozen=True)
class BGNBD:
    """Fitted BG/NBD parameters; every prediction is per customer summary (x, t_x, T) in days."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = float("nan")
    n: int = 0

    @property
    def params(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}

    def _alive_odds_inverse(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """δ(x>0) · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x): the odds of having dropped out."""
        repeat = x > 0
        out = np.zeros_like(x, dtype="float64")
        log_odds = (
            np.log(self.a)
            - np.log(self.b + x[repeat] - 1.0)
            + (self.r + x[repeat]) * (np.log(self.alpha + T[repeat]) - np.log(self.alpha + t_x[repeat]))
        )
        out[repeat] = np.exp(np.minimum(log_odds, 700.0))
        return out

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """P(the customer has not dropped out by T | x, t_x, T)."""
        x, t_x, T = (np.asarray(v, dtype="float64") for v in (x, t_x, T))
        return 1.0 / (1.0 + self._alive_odds_inverse(x, t_x, T))

    def p_no_transaction(
        self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, horizon_days: float
    ) -> np.ndarray:
        """P(no transaction in (T, T + horizon]): dropped out already, or alive and silent throughout
        (λ | alive ~ Gamma(r + x, α + T), so silence has probability ((α+T)/(α+T+h))^(r+x))."""
        x, t_x, T = (np.asarray(v, dtype="float64") for v in (x, t_x, T))
        alive = self.p_alive(x, t_x, T)
        silent = np.exp((self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + T + horizon_days)))
        return (1.0 - alive) + alive * silent

    def expected_transactions(
        self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, horizon_days: float
    ) -> np.ndarray:
        """E[transactions in (T, T + horizon] | x, t_x, T] (Fader, Hardie & Lee 2005, eq. 10)."""
        x, t_x, T = (np.asarray(v, dtype="float64") for v in (x, t_x, T))
        r, alpha, a, b, h = self.r, self.alpha, self.a, self.b, float(horizon_days)
        if abs(a - 1.0) < 1e-6:  # the closed form divides by a − 1; nudge off the removable point
            a = 1.0 + 1e-6
        z = h / (alpha + T + h)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1.0, z)
        bracket = 1.0 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + h))) * hyp
        expected = (a + b + x - 1.0) / (a - 1.0) * bracket
        return np.maximum(expected * self.p_alive(x, t_x, T), 0.0)


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, *, weights: np.ndarray | None = None) -> BGNBD:
    """Maximum-likelihood BG/NBD parameters (log-parametrised, L-BFGS-B) for customer summaries in days.

    Identical summaries are pooled first (a log of daily data repeats them a lot), so the cost grows with
    the distinct (x, t_x, T), not with the customers.
    """
    x, t_x, T = (np.asarray(v, dtype="float64").ravel() for v in (x, t_x, T))
    if not (len(x) == len(t_x) == len(T)):
        raise ValueError(f"x, t_x and T differ in length: {len(x)}, {len(t_x)}, {len(T)}")
    if len(x) == 0:
        raise ValueError("fitting BG/NBD needs at least one customer")
    bad = (x < 0) | (t_x < 0) | (T <= 0) | (t_x > T) | ~np.isfinite(x + t_x + T)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"customer summary {row} is invalid (x={x[row]}, t_x={t_x[row]}, T={T[row]}): need x ≥ 0 and "
            "0 ≤ t_x ≤ T with T > 0"
        )
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype="float64").ravel()
    pooled = (
        pd.DataFrame({"x": x, "t_x": t_x, "T": T, "w": w})
        .groupby(["x", "t_x", "T"], as_index=False)["w"]
        .sum()
    )
    px, pt, pT, pw = (pooled[c].to_numpy() for c in ("x", "t_x", "T", "w"))
    total = pw.sum()
    # α is a time scale: starting it at the mean T keeps the optimiser's first steps sensible in days
    start = np.log([1.0, max(float(np.average(pT, weights=pw)) / 10.0, 1e-3), 1.0, 1.0])

    def objective(log_params: np.ndarray) -> float:
        params = np.exp(log_params)
        value = -float(np.dot(pw, log_likelihood(tuple(params), px, pt, pT))) / total
        return value if np.isfinite(value) else 1e10

    bounds = [(-9.0, 9.0), (-9.0, 12.0), (-9.0, 9.0), (-9.0, 9.0)]
    result = minimize(objective, start, method="L-BFGS-B", bounds=bounds)
    r, alpha, a, b = np.exp(result.x)
    return BGNBD(float(r), float(alpha), float(a), float(b), -result.fun * total, int(total))
