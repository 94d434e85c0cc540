"""Drift between a reference population (the snapshot the champion models were trained on) and the current
one: per feature, per score, and in the mixes the policy produces. Pure: frames and thresholds in, frames
out; `models.monitoring` puts them together and the CLI, the report and the reviewer page show them.

- **PSI** (population stability index) `Σ (c − r) · ln(c / r)` over bins of the non-missing values: for a
  numeric column the reference's deciles (`bins` quantile bins, ties merged), for a categorical one its
  categories; an empty bin counts as `PSI_FLOOR` so the index stays finite.
- **Test**: two-sample Kolmogorov–Smirnov (numeric) or a chi-square test of homogeneity on the 2 × k table
  of category counts (categorical), both scipy's.
- **Breach**: PSI ≥ `psi` *and* the test rejects at `p_value` (a large PSI on a few rows is noise; a tiny
  shift on many rows is significant but harmless), or the missing-value rate moved by `missing_rate_change`
  or more. Fewer than `min_rows` non-missing values on either side: no PSI and no test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from models.config import MonitorSection

PSI_FLOOR = 1e-4
NUMERIC, CATEGORICAL = "numeric", "categorical"
FEATURE_COLUMNS = ("feature", "kind", "test", "reference_rows", "current_rows", "psi", "statistic", "p_value",
                   "missing_reference", "missing_current", "missing_change", "breach", "why")  # fmt: skip


@dataclass(frozen=True)
class DriftThresholds:
    """The config's `[monitor]` table: when a difference counts as a breach."""

    psi: float
    p_value: float
    missing_rate_change: float
    bins: int
    min_rows: int
    score_psi: float
    stage_share_change: float
    action_share_change: float

    @classmethod
    def from_config(cls, section: MonitorSection) -> DriftThresholds:
        return cls(
            psi=section.psi, p_value=section.p_value, missing_rate_change=section.missing_rate_change,
            bins=section.bins, min_rows=section.min_rows, score_psi=section.score_psi,
            stage_share_change=section.stage_share_change, action_share_change=section.action_share_change,
        )  # fmt: skip


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two vectors of bin proportions (each summing to 1); empty bins count as PSI_FLOOR."""
    r = np.maximum(np.asarray(reference, dtype=float), PSI_FLOOR)
    c = np.maximum(np.asarray(current, dtype=float), PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles 1/bins … (bins−1)/bins, ties merged."""
    return np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def binned_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of `values` in each bin (−∞, e0], (e0, e1], …, (e_last, ∞)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def _numeric(reference: np.ndarray, current: np.ndarray, bins: int) -> tuple[float, float, float]:
    edges = quantile_edges(reference, bins)
    index = psi(binned_shares(reference, edges), binned_shares(current, edges))
    test = stats.ks_2samp(reference, current)
    return index, float(test.statistic), float(test.pvalue)


def _categorical(reference: pd.Series, current: pd.Series) -> tuple[float, float, float]:
    r, c = reference.astype(str).value_counts(), current.astype(str).value_counts()
    categories = sorted(set(r.index) | set(c.index))
    r, c = r.reindex(categories, fill_value=0), c.reindex(categories, fill_value=0)
    index = psi((r / r.sum()).to_numpy(), (c / c.sum()).to_numpy())
    if len(categories) < 2:
        return index, 0.0, 1.0
    test = stats.chi2_contingency(np.vstack([r.to_numpy(), c.to_numpy()]), correction=False)
    return index, float(test.statistic), float(test.pvalue)


def column_drift(
    reference: pd.Series, current: pd.Series, kind: str, thresholds: DriftThresholds, *, psi_threshold: float
) -> dict[str, object]:
    """One column's PSI, test, missing rates and breach (with why) between the two samples."""
    missing_r = float(reference.isna().mean()) if len(reference) else float("nan")
    missing_c = float(current.isna().mean()) if len(current) else float("nan")
    r, c = reference.dropna(), current.dropna()
    index = statistic = p_value = float("nan")
    if min(len(r), len(c)) >= thresholds.min_rows:
        if kind == CATEGORICAL:
            index, statistic, p_value = _categorical(r, c)
        else:
            index, statistic, p_value = _numeric(
                r.to_numpy(dtype=float), c.to_numpy(dtype=float), thresholds.bins
            )
    why = []
    if index >= psi_threshold and p_value < thresholds.p_value:
        test = "chi-square" if kind == CATEGORICAL else "KS"
        why.append(f"PSI {index:.3f} ≥ {psi_threshold:g} ({test} p = {p_value:.2g})")
    change = missing_c - missing_r
    if abs(change) >= thresholds.missing_rate_change:
        why.append(f"missing rate {missing_r:.1%} → {missing_c:.1%}")
    return {
        "kind": kind, "test": "chi2" if kind == CATEGORICAL else "ks", "reference_rows": len(reference),
        "current_rows": len(current), "psi": index, "statistic": statistic, "p_value": p_value,
        "missing_reference": missing_r, "missing_current": missing_c, "missing_change": change,
        "breach": bool(why), "why": "; ".join(why),
    }  # fmt: skip


def feature_drift(
    reference: pd.DataFrame, current: pd.DataFrame, kinds: Mapping[str, str], thresholds: DriftThresholds
) -> pd.DataFrame:
    """Per feature of `kinds` (name → numeric | categorical) present in both frames: FEATURE_COLUMNS, the
    breaches first, then by PSI."""
    rows = [
        {"feature": name, **column_drift(reference[name], current[name], kind, thresholds, psi_threshold=thresholds.psi)}
        for name, kind in kinds.items()
        if name in reference and name in current
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))
    return frame.sort_values(
        ["breach", "psi"], ascending=False, kind="stable", na_position="last"
    ).reset_index(drop=True)


def score_drift(
    reference: pd.DataFrame, current: pd.DataFrame, thresholds: DriftThresholds,
    scores: Sequence[str] = ("p_churn", "p_upgrade"),
) -> pd.DataFrame:  # fmt: skip
    """The same per score column of two decision tables, with the score threshold; plus the means."""
    rows = []
    for name in scores:
        if name not in reference or name not in current:
            continue
        row = column_drift(
            reference[name], current[name], NUMERIC, thresholds, psi_threshold=thresholds.score_psi
        )
        rows.append({"score": name, "mean_reference": float(reference[name].mean()),
                     "mean_current": float(current[name].mean()), **row})  # fmt: skip
    return pd.DataFrame(rows)


def share_drift(reference: pd.Series, current: pd.Series, threshold: float, *, name: str) -> pd.DataFrame:
    """Each value's share of the rows in both samples (`name`, reference_share, current_share, change,
    breach when |change| ≥ threshold), in order of the current share."""
    r = reference.value_counts(normalize=True)
    c = current.value_counts(normalize=True)
    values = list(c.index) + [v for v in r.index if v not in c.index]
    frame = pd.DataFrame({
        name: values,
        "reference_share": [float(r.get(v, 0.0)) for v in values],
        "current_share": [float(c.get(v, 0.0)) for v in values],
    })  # fmt: skip
    frame["change"] = frame["current_share"] - frame["reference_share"]
    frame["breach"] = frame["change"].abs() >= threshold
    return frame


def value_by_stage(reference: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Per stage: users and the mean expected value of the chosen action in both decision tables."""

    def per_stage(table: pd.DataFrame) -> pd.DataFrame:
        return table.groupby("stage").agg(
            users=("stage", "size"), mean_expected_value=("expected_value", "mean")
        )

    joined = per_stage(reference).join(
        per_stage(current), lsuffix="_reference", rsuffix="_current", how="outer"
    )
    joined[["users_reference", "users_current"]] = (
        joined[["users_reference", "users_current"]].fillna(0).astype(int)
    )
    return joined.reset_index()


__all__ = [
    "CATEGORICAL",
    "NUMERIC",
    "DriftThresholds",
    "binned_shares",
    "column_drift",
    "feature_drift",
    "psi",
    "quantile_edges",
    "score_drift",
    "share_drift",
    "value_by_stage",
]
