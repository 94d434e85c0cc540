"""Training sets over many cutoffs, the cutoffs themselves (cadence and first cutoff chosen to fit the
history), and their time-based evaluation splits: a backtest of several folds when the history allows,
down to one train/validation/test split, then a single time-based holdout."""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.cutoffs import (
    SCHEDULES,
    Cadence,
    cadence_label,
    parse_cadence,
    parse_cutoffs,
    schedule,
)


@dataclass(frozen=True)
class Split:
    """Train on `train` cutoffs, stop early and calibrate on `valid`, report on `test`. Every training
    label window closes by the validation cutoff and every validation window by the test cutoff."""

    train: tuple[dt.date, ...]
    valid: dt.date
    test: dt.date
    # a single time-based holdout: fit on every cutoff whose window closes by the test cutoff (`train` and
    # `valid`), early-stopping and calibrating on a share of the users held out of fitting (their label
    # windows overlap the fitted ones in time, not in users); only the test cutoff is separated in time
    holdout: bool = False

    def describe(self) -> str:
        if self.holdout:
            cutoffs = (*self.train, self.valid)
            return (
                f"train {cutoffs[0]}..{cutoffs[-1]} ({len(cutoffs)}) on {1 - HOLDOUT_VALID_SHARE:.0%} of the users, "
                f"valid on the other {HOLDOUT_VALID_SHARE:.0%} at the same cutoffs, test {self.test}"
            )
        return f"train {self.train[0]}..{self.train[-1]} ({len(self.train)}), valid {self.valid}, test {self.test}"


# In a single holdout, the share of users whose rows early-stop and calibrate instead of being fitted.
HOLDOUT_VALID_SHARE = 0.2


def validation_users(user_ids: pd.Series, share: float = HOLDOUT_VALID_SHARE) -> np.ndarray:
    """Which rows belong to the users held out for validation: a stable hash of the user id, so a user's
    rows at every cutoff fall on the same side, whatever the order or the process."""
    buckets = user_ids.astype(str).map(lambda user: zlib.crc32(user.encode()) % 1000).to_numpy()
    return buckets < round(share * 1000)


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


# Test cutoffs of two folds lie at least this far apart, so that daily cutoffs do not make three folds of
# three consecutive days.
MIN_FOLD_SPACING_DAYS = 7


def full_splits(cutoffs: Sequence[dt.date], horizon_days: int, limit: int) -> list[Split]:
    """Up to `limit` expanding-window folds (train → valid → test, each label window closed by the next),
    the latest last; their test cutoffs at least MIN_FOLD_SPACING_DAYS apart."""
    ordered = sorted(set(cutoffs))
    splits: list[Split] = []
    for test in reversed(ordered):
        if len(splits) == limit:
            break
        if splits and (splits[-1].test - test).days < MIN_FOLD_SPACING_DAYS:
            continue
        try:
            splits.append(time_split(ordered, horizon_days, test=test))
        except NotEnoughHistory:
            break
    return list(reversed(splits))


def holdout_split(cutoffs: Sequence[dt.date], horizon_days: int) -> Split:
    """A single time-based holdout: test on the latest closed cutoff; train on the cutoffs whose windows close
    by it, early-stopping and calibrating on the latest of those."""
    ordered = sorted(set(cutoffs))
    if not ordered:
        raise NotEnoughHistory("no cutoff has a closed label window")
    test = ordered[-1]
    before = [c for c in ordered if c + dt.timedelta(days=horizon_days) <= test]
    if len(before) < 2:
        raise NotEnoughHistory(
            f"a time-based holdout needs two cutoffs whose {horizon_days}-day windows close by the test cutoff "
            f"{test}; the data gives {len(before)}"
        )
    return Split(train=tuple(before[:-1]), valid=before[-1], test=test, holdout=True)


def evaluation_splits(
    cutoffs: Sequence[dt.date], horizon_days: int, folds: int = 3, *, exact: bool = False
) -> list[Split]:
    """The evaluation the cutoffs allow: up to `folds` backtest folds, else a single time-based holdout.
    With `exact`, exactly `folds` folds or NotEnoughHistory."""
    splits = full_splits(cutoffs, horizon_days, folds)
    if exact and len(splits) < folds:
        raise NotEnoughHistory(
            f"a {folds}-fold backtest needs {folds} test cutoffs each with earlier closed validation and "
            f"training cutoffs; the data gives {len(splits)} (cutoffs: {_listed(cutoffs)})"
        )
    if splits:
        return splits
    return [holdout_split(cutoffs, horizon_days)]


def backtest_splits(cutoffs: Sequence[dt.date], horizon_days: int, folds: int = 3) -> list[Split]:
    """Exactly `folds` expanding-window folds, the latest last (NotEnoughHistory otherwise)."""
    return evaluation_splits(cutoffs, horizon_days, folds, exact=True)


def describe_evaluation(splits: Sequence[Split]) -> str:
    """How a metric was measured: `3-fold backtest`, `1-fold backtest`, `single time-based holdout`."""
    if len(splits) == 1 and splits[0].holdout:
        return "single time-based holdout"
    return f"{len(splits)}-fold backtest"


def _listed(dates: Sequence[dt.date], limit: int = 8) -> str:
    ordered = sorted(set(dates))
    if len(ordered) <= limit:
        return ", ".join(map(str, ordered))
    return f"{len(ordered)} dates {ordered[0]}..{ordered[-1]}"


def monthly_cutoffs(first_event: dt.date, data_end: dt.date, after_days: int) -> list[dt.date]:
    """The first day of each month from `after_days` after the first event, strictly before `data_end`."""
    start = first_event + dt.timedelta(days=after_days)
    first = start if start.day == 1 else (start.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    last = (data_end - dt.timedelta(days=1)).replace(day=1)
    return parse_cutoffs(f"monthly:{first}..{last}") if first <= last else []


# ---------------------------------------------------------------------------------------------------
# training cutoffs that fit the history


@dataclass(frozen=True)
class CutoffPlan:
    """The training cutoffs: their cadence, the history before the first one, the closed ones (labels
    known by the data's end) and the evaluation those dates allow."""

    cadence: Cadence
    lead_days: int
    lead_reason: str
    cutoffs: list[dt.date]
    splits: list[Split]
    chosen_because: str

    def describe(self) -> str:
        return (
            f"{len(self.cutoffs)} {cadence_label(self.cadence)} cutoffs with closed labels "
            f"({self.cutoffs[0]}..{self.cutoffs[-1]}; {self.chosen_because}); the first is {self.lead_days} days "
            f"after the first event ({self.lead_reason}); evaluation: {describe_evaluation(self.splits)}"
        )


def closed_schedule(
    cadence: Cadence, first_event: dt.date, data_end: dt.date, *, horizon_days: int, lead_days: int
) -> list[dt.date]:
    """The cutoffs of `cadence` from `lead_days` after the first event whose label window closes by
    `data_end` (the first day with no data)."""
    last = data_end - dt.timedelta(days=horizon_days)
    return schedule(cadence, first_event + dt.timedelta(days=lead_days), last)


def _level(splits: Sequence[Split], folds: int) -> tuple[int, int]:
    """How good an evaluation is: full folds (up to the number asked for), then whether there is one at all."""
    full = sum(not s.holdout for s in splits)
    return min(full, folds), int(bool(splits))


def _splits_or_none(cutoffs: Sequence[dt.date], horizon_days: int, folds: int, exact: bool) -> list[Split]:
    try:
        return evaluation_splits(cutoffs, horizon_days, folds, exact=exact)
    except NotEnoughHistory:
        return []


def plan_cutoffs(
    first_event: dt.date,
    data_end: dt.date,
    *,
    horizon_days: int,
    lead_days: int,
    lead_reason: str = "configured",
    cadence: Cadence | str = "auto",
    folds: int = 3,
    exact_folds: bool = False,
) -> CutoffPlan:
    """Training cutoffs that fit the history. With cadence "auto", the coarsest of monthly, weekly and daily
    that gives the best evaluation (the folds asked for, else as many as possible, else a single holdout):
    coarse cutoffs when the history is long, finer ones when the horizon is long against it. Raises
    NotEnoughHistory naming the minimum history for the horizon and cadence when nothing fits."""
    candidates: list[Cadence] = list(reversed(SCHEDULES)) if cadence == "auto" else [parse_cadence(cadence)]
    best: tuple[tuple[int, int], Cadence, list[dt.date], list[Split]] | None = None
    for candidate in candidates:
        cutoffs = closed_schedule(
            candidate, first_event, data_end, horizon_days=horizon_days, lead_days=lead_days
        )
        splits = _splits_or_none(cutoffs, horizon_days, folds, exact_folds)
        level = _level(splits, folds)
        if best is None or level > best[0]:
            best = (level, candidate, cutoffs, splits)
    assert best is not None
    level, chosen, closed, splits = best
    # only the cutoffs an evaluation split reads are built (daily cutoffs for a long horizon would otherwise
    # build months of rows nothing fits on)
    cutoffs = sorted({c for s in splits for c in (*s.train, s.valid, s.test)}) or closed
    if not splits:
        raise NotEnoughHistory(
            minimum_history_message(
                first_event, data_end, horizon_days=horizon_days, lead_days=lead_days, lead_reason=lead_reason,
                candidates=candidates, folds=folds if exact_folds else 0,
            )
        )  # fmt: skip
    if cadence != "auto":
        because = "configured"
    elif chosen == candidates[0]:
        because = f"the coarsest cadence giving {describe_evaluation(splits)}"
    else:
        coarser = ", ".join(cadence_label(c) for c in candidates[: candidates.index(chosen)])
        because = f"{coarser} cutoffs give {'fewer folds' if level[1] else 'no evaluation'} for a {horizon_days}-day horizon"
    return CutoffPlan(chosen, lead_days, lead_reason, cutoffs, splits, because)


def minimum_history_days(
    first_event: dt.date,
    *,
    horizon_days: int,
    lead_days: int,
    cadence: Cadence,
    folds: int = 0,
    search_days: int = 3660,
) -> int | None:
    """The fewest days from the first event to the data's end that give a single holdout (`folds` 0) or
    `folds` backtest folds at this cadence; None beyond `search_days`."""
    start = lead_days + 2 * horizon_days
    for days in range(start, search_days):
        end = first_event + dt.timedelta(days=days)
        cutoffs = closed_schedule(cadence, first_event, end, horizon_days=horizon_days, lead_days=lead_days)
        if folds:
            if len(full_splits(cutoffs, horizon_days, folds)) >= folds:
                return days
        elif _splits_or_none(cutoffs, horizon_days, 1, False):
            return days
    return None


def minimum_history_message(
    first_event: dt.date,
    data_end: dt.date,
    *,
    horizon_days: int,
    lead_days: int,
    lead_reason: str,
    candidates: Sequence[Cadence],
    folds: int = 0,
) -> str:
    """Why there is no evaluation, naming the minimum history for the horizon and the cadence."""
    needs = {c: minimum_history_days(first_event, horizon_days=horizon_days, lead_days=lead_days, cadence=c,
                                     folds=folds) for c in candidates}  # fmt: skip
    known = {c: d for c, d in needs.items() if d is not None}
    what = f"a {folds}-fold backtest" if folds else "a single time-based holdout"
    have = (data_end - first_event).days
    if known:
        cadence, days = min(known.items(), key=lambda kv: kv[1])
        minimum = f"needs at least {days} days of history at {cadence_label(cadence)} cutoffs"
    else:
        minimum = "needs more history than 10 years"
    return (
        f"not enough history for a {horizon_days}-day horizon: {what} {minimum} — {lead_days} days before the "
        f"first cutoff ({lead_reason}), training cutoffs whose {horizon_days}-day labels close by the test "
        f"cutoff, and {horizon_days} more days for the test labels; the data has {have} days "
        f"({first_event} to {data_end - dt.timedelta(days=1)}). Use a shorter --horizon-days, or a smaller "
        f"training.first_cutoff_after_days"
    )
