"""Drift (models.drift): a shifted copy of a feature table breaches for exactly the shifted features, an
unshifted copy for none; PSI by hand and against an independent computation (scipy's relative entropy)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from clm.config import load_config
from models.drift import (
    CATEGORICAL,
    NUMERIC,
    DriftThresholds,
    binned_shares,
    feature_drift,
    psi,
    quantile_edges,
    share_drift,
)

THRESHOLDS = DriftThresholds.from_config(load_config().monitor)
KINDS = {"days_since_last_event": NUMERIC, "events_30d": NUMERIC, "revenue_90d": NUMERIC, "tenure_days": NUMERIC,
         "gap_ratio": NUMERIC, "current_plan": CATEGORICAL}  # fmt: skip


def feature_table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    revenue = rng.gamma(2.0, 20.0, n)
    revenue[rng.random(n) < 0.6] = 0.0  # mostly ties at zero, as purchase features are
    gap = rng.lognormal(0.0, 0.7, n)
    gap[rng.random(n) < 0.1] = np.nan  # no gap without two events
    return pd.DataFrame({
        "days_since_last_event": rng.exponential(10.0, n).round(),
        "events_30d": rng.poisson(6.0, n).astype(float),
        "revenue_90d": revenue,
        "tenure_days": rng.uniform(0, 365, n).round(),
        "gap_ratio": gap,
        "current_plan": rng.choice(["free", "basic", "pro"], n, p=[0.6, 0.3, 0.1]),
    })  # fmt: skip


def shifted(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """days_since_last_event up by half its spread, current_plan's mix moved, gap_ratio missing more often."""
    rng = np.random.default_rng(seed)
    out = table.copy()
    out["days_since_last_event"] = out["days_since_last_event"] + 5.0
    out["current_plan"] = rng.choice(["free", "basic", "pro"], len(out), p=[0.35, 0.4, 0.25])
    out.loc[rng.random(len(out)) < 0.12, "gap_ratio"] = np.nan
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_unshifted_copy_raises_no_breach(seed: int) -> None:
    reference = feature_table(4000, seed=seed)
    for current in (reference.copy(), feature_table(4000, seed=seed + 100)):  # the same rows; a new draw
        drift = feature_drift(reference, current, KINDS, THRESHOLDS)
        assert set(drift["feature"]) == set(KINDS)
        assert not drift["breach"].any(), drift[drift["breach"]][["feature", "why"]]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_shifted_copy_breaches_for_exactly_the_shifted_features(seed: int) -> None:
    reference = feature_table(4000, seed=seed)
    drift = feature_drift(reference, shifted(feature_table(4000, seed=seed + 100), seed), KINDS, THRESHOLDS)
    breached = set(drift.loc[drift["breach"], "feature"])
    assert breached == {"days_since_last_event", "current_plan", "gap_ratio"}
    why = drift.set_index("feature")["why"]
    assert "PSI" in why["days_since_last_event"] and "KS" in why["days_since_last_event"]
    assert "chi-square" in why["current_plan"]
    assert "missing rate" in why["gap_ratio"]


def test_psi_by_hand() -> None:
    # 50/50 → 25/75: (0.25 − 0.5)·ln(0.5) + (0.75 − 0.5)·ln(1.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(
        -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    )
    # an empty bin counts as 1e-4, so the index stays finite
    assert psi(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(
        (0.5 - 1.0) * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    )
    edges = quantile_edges(np.arange(1.0, 11.0), 2)  # median 5.5
    assert list(edges) == [5.5]
    assert list(binned_shares(np.array([1.0, 5.5, 6.0, 10.0]), edges)) == [0.5, 0.5]


def test_feature_drift_agrees_with_an_independent_computation() -> None:
    """PSI = symmetric relative entropy of the bin shares (scipy.special.rel_entr over pandas' own binning of
    the same quantile edges); KS and chi-square as scipy computes them on the same samples."""
    reference, current = feature_table(3000, seed=5), shifted(feature_table(3000, seed=6), seed=7)
    drift = feature_drift(reference, current, KINDS, THRESHOLDS).set_index("feature")
    for name, kind in KINDS.items():
        r, c = reference[name].dropna(), current[name].dropna()
        if kind == NUMERIC:
            qs = np.unique(r.quantile(np.linspace(0, 1, THRESHOLDS.bins + 1)[1:-1]).to_numpy())
            bins = [-np.inf, *qs, np.inf]
            pr = pd.cut(r, bins, right=True).value_counts(normalize=True, sort=False).to_numpy()
            pc = pd.cut(c, bins, right=True).value_counts(normalize=True, sort=False).to_numpy()
            expected_test = stats.ks_2samp(r, c)
        else:
            cats = sorted(set(r) | set(c))
            pr = r.value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy()
            pc = c.value_counts(normalize=True).reindex(cats, fill_value=0).to_numpy()
            table = pd.crosstab(np.r_[np.zeros(len(r)), np.ones(len(c))], np.r_[r.to_numpy(), c.to_numpy()])
            expected_test = stats.chi2_contingency(table.to_numpy(), correction=False)
        pr, pc = np.maximum(pr, 1e-4), np.maximum(pc, 1e-4)
        expected_psi = special.rel_entr(pc, pr).sum() + special.rel_entr(pr, pc).sum()
        assert drift.at[name, "psi"] == pytest.approx(expected_psi, rel=1e-9), name
        assert drift.at[name, "p_value"] == pytest.approx(expected_test.pvalue, rel=1e-9, abs=1e-300), name
        assert drift.at[name, "missing_reference"] == pytest.approx(reference[name].isna().mean())


def test_share_drift_flags_a_moved_share() -> None:
    reference = pd.Series(["a"] * 50 + ["b"] * 50)
    current = pd.Series(["a"] * 70 + ["b"] * 25 + ["c"] * 5)
    shares = share_drift(reference, current, 0.1, name="stage").set_index("stage")
    assert shares.loc["a", "change"] == pytest.approx(0.2) and shares.loc["a", "breach"]
    assert shares.loc["b", "change"] == pytest.approx(-0.25) and shares.loc["b", "breach"]
    assert shares.loc["c", "reference_share"] == 0.0 and not shares.loc["c", "breach"]
