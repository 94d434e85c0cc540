"""The BG/NBD baseline against a process with known parameters: the fit recovers them, and its
predictions (P(alive), expected transactions, P(none within a horizon)) match what the process does next."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.btyd import BGNBD, fit_bgnbd, log_likelihood, rfm_summary

TRUE = {"r": 0.8, "alpha": 20.0, "a": 0.8, "b": 2.5}


def simulate_bgnbd(
    n: int, r: float, alpha: float, a: float, b: float, *, horizon: float, seed: int
) -> pd.DataFrame:
    """Customers of a BG/NBD process observed for T ~ U(100, 400) days after their first transaction, and
    their transactions in the `horizon` days after T (the first at time 0 is not counted in x)."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.uniform(100.0, 400.0, n)
    rows = []
    for i in range(n):
        t, x, t_x, future, alive = 0.0, 0, 0.0, 0, True
        while alive:
            t += rng.exponential(1.0 / lam[i])
            if t > T[i] + horizon:
                break
            if t <= T[i]:
                x, t_x = x + 1, t
            else:
                future += 1
            alive = rng.random() >= p[i]
        rows.append((x, t_x, T[i], future))
    return pd.DataFrame(rows, columns=["x", "t_x", "T", "future"])


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return simulate_bgnbd(4000, **TRUE, horizon=30.0, seed=7)


def test_fit_recovers_the_parameters_of_a_bgnbd_process(customers: pd.DataFrame) -> None:
    fitted = fit_bgnbd(customers["x"], customers["t_x"], customers["T"])

    for name, value in TRUE.items():
        assert fitted.params[name] == pytest.approx(value, rel=0.15), name
    # the optimum is an optimum: the true parameters are no more likely
    truth = log_likelihood(tuple(TRUE.values()), customers["x"], customers["t_x"], customers["T"]).sum()
    assert fitted.log_likelihood >= truth


def test_predictions_match_what_the_process_does_next(customers: pd.DataFrame) -> None:
    model = BGNBD(**TRUE)
    x, t_x, T = customers["x"], customers["t_x"], customers["T"]
    expected = model.expected_transactions(x, t_x, T, 30.0)
    silent = model.p_no_transaction(x, t_x, T, 30.0)

    assert expected.mean() == pytest.approx(customers["future"].mean(), rel=0.08)
    assert silent.mean() == pytest.approx((customers["future"] == 0).mean(), abs=0.02)
    assert roc_auc_score(customers["future"] == 0, silent) > 0.8


def test_p_alive_is_one_without_repeat_transactions_and_falls_with_silence() -> None:
    model = BGNBD(**TRUE)
    assert model.p_alive(np.array([0.0]), np.array([0.0]), np.array([200.0]))[0] == 1.0
    alive = model.p_alive(np.full(3, 5.0), np.full(3, 100.0), np.array([101.0, 150.0, 300.0]))
    assert np.all(np.diff(alive) < 0) and 0.0 < alive[-1] < alive[0] <= 1.0


def test_rfm_summary_reads_x_t_x_and_T_from_features() -> None:
    frame = pd.DataFrame(
        {
            "tenure_days": [100.0, 50.0, 10.0],
            "active_days_total": [6.0, 1.0, 0.0],
            "days_since_last_event": [20.0, 49.0, np.nan],
            "purchase_count_total": [3.0, 0.0, 0.0],
            "days_since_last_purchase": [40.0, np.nan, np.nan],
        }
    )
    assert rfm_summary(frame).to_dict("list") == {"x": [5.0, 0.0, 0.0], "t_x": [80.0, 0.0, 0.0],
                                                  "T": [100.0, 50.0, 10.0]}  # fmt: skip
    assert rfm_summary(frame, "purchase")["t_x"].tolist() == [60.0, 0.0, 0.0]
    with pytest.raises(KeyError, match="tenure_days"):
        rfm_summary(frame.drop(columns="tenure_days"))


def test_fit_names_an_impossible_summary() -> None:
    with pytest.raises(ValueError, match=r"customer summary 1 is invalid \(x=2.0, t_x=50.0, T=40.0\)"):
        fit_bgnbd(np.array([1.0, 2.0]), np.array([5.0, 50.0]), np.array([10.0, 40.0]))
