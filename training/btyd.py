"""The population the BG/NBD baseline is fitted on: every user known at each cutoff, those already silent
included (the training rows leave them out, and without them the fit sees no drop-outs)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from features.build import LabelParams
from features.jobs import build_feature_tables
from features.registry import FeatureParams
from models.btyd import ACTIVITY_COLUMNS, rfm_summary


def population_summaries(
    data_dir: Path,
    cutoffs: Sequence[dt.date],
    *,
    params: FeatureParams,
    labels: LabelParams,
    activity: str = "any",
    as_of: dt.date | None = None,
) -> pd.DataFrame:
    """`user_id, cutoff, x, t_x, T` for every user first seen before each cutoff, from the same registry
    features the model reads (so the summary of a scored row is computed the same way)."""
    everyone = dataclasses.replace(labels, keep_churned_users=True)
    columns = ["user_id", "cutoff", "tenure_days", *ACTIVITY_COLUMNS[activity]]
    with tempfile.TemporaryDirectory(prefix="clm-btyd-") as tmp:
        summary = build_feature_tables(
            data_dir, cutoffs, Path(tmp), params=params, label_params=everyone, as_of=as_of
        )
        frame = pd.read_parquet(summary.features_path, columns=columns)
    frame["cutoff"] = pd.to_datetime(frame["cutoff"]).dt.date
    return summaries_of(frame, activity)


def summaries_of(frame: pd.DataFrame, activity: str = "any") -> pd.DataFrame:
    """`user_id, cutoff, x, t_x, T` from a feature frame that already holds every user (lapsed included)."""
    frame = frame.reset_index(drop=True)
    return pd.concat([frame[["user_id", "cutoff"]], rfm_summary(frame, activity)], axis=1)
