"""Model behaviour checks run before a promotion (and by the model tests): direction, invariance and
SHAP additivity on a sample of real rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.bundle import ModelBundle
from models.scoring import contributions, raw_scores, score

DIRECTION_FEATURES = ("days_since_last_event", "days_since_last_login")


class CheckSkipped(Exception):
    """A check that cannot run on these rows (the data never has the feature); not a failure."""


@dataclass
class BehaviourReport:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, bool(ok), detail))

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append((name, reason))

    def text(self) -> str:
        lines = [f"{'PASS' if ok else 'FAIL'} {name}: {detail}" for name, ok, detail in self.checks]
        return "\n".join(lines + [f"SKIP {name}: {reason}" for name, reason in self.skipped])


def check_direction(
    bundle: ModelBundle, frame: pd.DataFrame, feature: str, steps=(1.0, 7.0, 30.0)
) -> tuple[bool, str]:
    """Raising `feature` (other features fixed) never lowers the calibrated probability. Rows where the
    feature is missing are left out: filling them would change more than the feature's size. Raises
    CheckSkipped when no row has the feature (a log without logins has no days since the last login)."""
    frame = frame[frame[feature].notna()] if feature in frame else frame.iloc[:0]
    if frame.empty:
        raise CheckSkipped(f"the data never has {feature}")
    base = score(frame, bundle)["probability"].to_numpy()
    worst = 0.0
    for step in steps:
        moved = frame.copy()
        moved[feature] = moved[feature] + step
        drop = base - score(moved, bundle)["probability"].to_numpy()
        worst = max(worst, float(drop.max(initial=0.0)))
    return worst <= 1e-12, f"largest drop in probability when raising {feature}: {worst:.3g}"


def check_invariance(bundle: ModelBundle, frame: pd.DataFrame) -> tuple[bool, str]:
    """Renaming users or reordering rows changes no score."""
    base = score(frame, bundle)["probability"].to_numpy()
    renamed = frame.copy()
    if "user_id" in renamed:
        renamed["user_id"] = [f"someone-else-{i}" for i in range(len(renamed))]
    order = np.random.default_rng(0).permutation(len(frame))
    shuffled = score(renamed.iloc[order], bundle)["probability"].to_numpy()
    diff = float(np.abs(shuffled - base[order]).max(initial=0.0))
    return diff == 0.0, f"largest change after renaming and shuffling: {diff:.3g}"


def check_additivity(bundle: ModelBundle, frame: pd.DataFrame, tolerance: float = 1e-6) -> tuple[bool, str]:
    """SHAP contributions plus the base value equal the raw score, per row."""
    total = contributions(frame, bundle).sum(axis=1)
    diff = float(np.abs(total - raw_scores(frame, bundle)).max(initial=0.0))
    return diff <= tolerance, f"largest |sum(contributions) + base − raw score|: {diff:.3g}"


def behaviour_report(
    bundle: ModelBundle, frame: pd.DataFrame, *, sample: int = 1000, seed: int = 0
) -> BehaviourReport:
    rows = frame.sample(min(sample, len(frame)), random_state=seed) if len(frame) > sample else frame
    report = BehaviourReport()
    if bundle.target == "churn":
        for feature in DIRECTION_FEATURES:
            if feature in bundle.feature_names:
                try:
                    report.add(f"direction:{feature}", *check_direction(bundle, rows, feature))
                except CheckSkipped as exc:
                    report.skip(f"direction:{feature}", str(exc))
    report.add("invariance", *check_invariance(bundle, rows))
    report.add("shap_additivity", *check_additivity(bundle, rows))
    return report
