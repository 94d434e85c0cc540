"""Training sets over many cutoffs and their time-based splits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.cutoffs import parse_cutoffs


@dataclass(frozen=True)
class Split:
    """Train on `train` cutoffs, stop early and calibrate on `valid`, report on `test`. Every training
    label window closes by the validation cutoff and every validation window by the test cutoff."""

    train: tuple[dt.date, ...]
    valid: dt.date
    test: dt.date

    def describe(self) -> str:
        return f"train {self.train[0]}..{self.train[-1]} ({len(self.train)}), valid {self.valid}, test {self.test}"


class NotEnoughHistory(ValueError):
    """Too few cutoffs with closed labels for the requested split or backtest."""


def load_training_frame(features_path: Path, labels_path: Path) -> pd.DataFrame:
    """Features joined to their labels on (user_id, cutoff); cutoff as a date."""
    features = pd.read_parquet(features_path)
    labels = pd.read_parquet(labels_path)
    frame = features.merge(labels, on=["user_id", "cutoff"], how="left", validate="one_to_one")
    frame["cutoff"] = pd.to_datetime(frame["cutoff"]).dt.date
    return frame


def closed_cutoffs(frame: pd.DataFrame, target: str) -> list[dt.date]:
    """Cutoffs whose label window has closed (some label known)."""
    known = frame.loc[frame[target].notna(), "cutoff"]
    return sorted(set(known))


def time_split(cutoffs: Sequence[dt.date], horizon_days: int, *, test: dt.date | None = None) -> Split:
    """The split ending at `test` (default: the latest closed cutoff)."""
    ordered = sorted(set(cutoffs))
    if not ordered:
        raise NotEnoughHistory("no cutoff has a closed label window")
    test = test or ordered[-1]
    horizon = dt.timedelta(days=horizon_days)
    valid_candidates = [c for c in ordered if c + horizon <= test]
    if not valid_candidates:
        raise NotEnoughHistory(
            f"no validation cutoff whose {horizon_days}-day window closes by the test cutoff {test}"
        )
    valid = valid_candidates[-1]
    train = tuple(c for c in ordered if c + horizon <= valid)
    if not train:
        raise NotEnoughHistory(
            f"no training cutoff whose {horizon_days}-day window closes by the validation cutoff {valid}"
        )
    return Split(train=train, valid=valid, test=test)


def backtest_splits(cutoffs: Sequence[dt.date], horizon_days: int, folds: int = 3) -> list[Split]:
    """Expanding-window folds, the latest last: fold k tests on the k-th latest closed cutoff."""
    ordered = sorted(set(cutoffs))
    splits = []
    for test in reversed(ordered):
        try:
            splits.append(time_split(ordered, horizon_days, test=test))
        except NotEnoughHistory:
            break
        if len(splits) == folds:
            break
    if len(splits) < folds:
        raise NotEnoughHistory(
            f"a {folds}-fold backtest needs {folds} test cutoffs each with earlier closed validation and "
            f"training cutoffs; the data gives {len(splits)} (cutoffs: {', '.join(map(str, ordered))})"
        )
    return list(reversed(splits))


def monthly_cutoffs(first_event: dt.date, data_end: dt.date, after_days: int) -> list[dt.date]:
    """The first day of each month from `after_days` after the first event, strictly before `data_end`."""
    start = first_event + dt.timedelta(days=after_days)
    first = start if start.day == 1 else (start.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    last = (data_end - dt.timedelta(days=1)).replace(day=1)
    return parse_cutoffs(f"monthly:{first}..{last}") if first <= last else []
