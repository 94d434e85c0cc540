"""The /review overview: the snapshot's decisions summarised and drawn, built once per (model versions,
store snapshot) and cached. The I/O (`overview_inputs`) is apart from the summary (`summarise_overview`), so
a shutdown waits for the store read only and cancels the rest."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from fastapi import HTTPException

from features.build import LabelParams
from features.jobs import feature_history
from features.online import OnlineStore
from features.registry import FeatureParams
from models import overview as ov
from models import plots
from models.catalog import contact_params
from models.lifecycle import AnalyticsParams, LifecycleAnalytics, lifecycle_analytics
from serving.config import ServingConfig
from serving.review.text import TEXT
from serving.state import ModelSet

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


@dataclass
class Overview:
    """Everything /review shows, computed once per (model versions, store snapshot)."""

    as_of: dt.date
    snapshot: pd.DataFrame  # one decision per user at the snapshot
    history: pd.DataFrame  # user_id, cutoff, stage, p_churn, action … at every cutoff
    cutoffs: list[dt.date]
    counts: pd.DataFrame
    flow: pd.DataFrame | None  # from-stage × to-stage users for the last step
    mix: pd.DataFrame
    top: pd.DataFrame
    figures: dict[str, dict[str, str]]  # name → language → inline SVG
    calibration: dict[str, Any] | None  # cutoff, users, ece
    has_history: bool
    seconds: float
    timelines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reach: pd.DataFrame | None = None  # stage, users, contacted (at_risk and dormant)
    analytics: LifecycleAnalytics | None = None  # conversion, retention, referral, 80/20 view, underserved


def _drawn(figure: Figure, scope: str) -> dict[str, str]:
    """The figure as inline SVG in each language of the pages (drawn in English, then relabelled)."""
    return {lang: plots.figure_svg(plots.relabel(figure, lang), scope) for lang in TEXT}


def _history_cutoffs(as_of: dt.date, earlier: int, step_days: int) -> list[dt.date]:
    return [as_of - dt.timedelta(days=step_days * k) for k in range(earlier, -1, -1)]


def store_frame(store: OnlineStore) -> pd.DataFrame:
    rows = store.read_many(store.user_ids())
    frame = pd.DataFrame([row.values for row in rows.values()])
    frame.insert(0, "user_id", list(rows))
    return frame


class BuildCancelled(Exception):
    """The app is shutting down: an overview build in progress stops at its next step."""


def _stop_if(cancelled: Callable[[], bool]) -> None:
    if cancelled():
        raise BuildCancelled


def overview_inputs(
    store: OnlineStore, config: ServingConfig, events_dir: str | None, models: ModelSet | None = None
) -> tuple[dt.date, pd.DataFrame]:
    """The I/O of an overview: the snapshot's date and the features of every user at the snapshot (and, with
    the event data, at the earlier cutoffs, with the labels where their horizon has closed), with the contact
    state per action the `models`' policy reads beside them (the store keeps it for the snapshot)."""
    info = store.info()
    if info is None:
        raise HTTPException(503, "the online store has no snapshot yet")
    review = config.review
    as_of = info.as_of
    if events_dir:
        cutoffs = _history_cutoffs(as_of, review.history_cutoffs, review.history_step_days)
        contacts = (
            None if models is None else contact_params(config, models.policy.catalog, models.policy.contact)
        )
        frame = feature_history(
            Path(events_dir), cutoffs, params=FeatureParams.from_config(config.features),
            label_params=LabelParams.from_config(config.labels), contacts=contacts,
        )  # fmt: skip
    else:
        frame = store_frame(store).assign(cutoff=as_of)
    return as_of, frame


def read_users(events_dir: str | None) -> pd.DataFrame | None:
    """The users input of the event data (signup and channel, for the referral rates), when there is one."""
    path = Path(events_dir) / "users.parquet" if events_dir else None
    return pd.read_parquet(path) if path is not None and path.exists() else None


def timelines_by_user(history: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Each user's (cutoff, stage, churn probability, action) rows, oldest first: one sort and one pass
    (a groupby with a frame per user cost ~3 ms a user, 10 s for 3,000)."""
    ordered = history[["user_id", "cutoff", "stage", "p_churn", "action"]].sort_values(
        ["user_id", "cutoff"], kind="stable"
    )
    timelines: dict[str, list[dict[str, Any]]] = {}
    for record in ordered.to_dict("records"):
        timelines.setdefault(str(record["user_id"]), []).append(record)
    return timelines


def summarise_overview(
    models: ModelSet,
    frame: pd.DataFrame,
    as_of: dt.date,
    config: ServingConfig,
    has_history: bool,
    cancelled: Callable[[], bool] = lambda: False,
    users: pd.DataFrame | None = None,
) -> Overview:
    """The decisions over `frame` summarised and drawn (no I/O); stops between steps once `cancelled()`."""
    started = time.perf_counter()
    history = ov.population_decisions(
        frame, models.churn, models.upgrade, models.policy, reactivation=models.reactivation
    )
    present = sorted(history["cutoff"].unique())
    snapshot = history[history["cutoff"] == as_of].reset_index(drop=True)
    counts = ov.stage_counts(history)
    flows = ov.stage_flows(history)
    flow = ov.flow_matrix(flows, present[-2], present[-1]) if len(present) > 1 else None
    mix = ov.action_mix(snapshot)
    reach = ov.contacted_by_stage(snapshot)
    _stop_if(cancelled)
    figures = {"stages": _drawn(plots.stage_share_figure(counts), "stages")}
    _stop_if(cancelled)
    figures["actions"] = _drawn(
        plots.action_mix_figure(mix, currency=models.policy.value.currency), "actions"
    )
    _stop_if(cancelled)
    figures["scores"] = _drawn(
        plots.score_distribution_figure({"churn": snapshot["p_churn"], "upgrade": snapshot["p_upgrade"]}),
        "scores",
    )
    calibration = None
    if "churn" in frame:
        known = frame["churn"].notna().to_numpy()
        labelled = sorted(history.loc[known, "cutoff"].unique())
        if labelled:
            _stop_if(cancelled)
            cutoff = labelled[-1]
            # the churn model's own population: lapsed users are scored by the reactivation model
            rows = (
                known
                & (history["cutoff"] == cutoff).to_numpy()
                & (history["scored_by"] == "churn").to_numpy()
            )
            y = frame.loc[rows, "churn"].astype(float).to_numpy()
            p = history.loc[rows, "p_churn"].to_numpy()
            from models.metrics import MIN_RELIABLE_BIN_USERS, expected_calibration_error, reliability_table

            title = f"Calibration on the {cutoff} cutoff ({int(rows.sum()):,} users, labels known)"
            figures["calibration"] = _drawn(plots.calibration_figure(y, None, p, title=title), "calibration")
            # stacked, 12 pt: the page shows it in half its width, where the wide figure's text is ~6 px
            figures["lift"] = _drawn(
                plots.lift_figure(y, {"churn model": p}, stacked=True, font_size=12), "lift"
            )
            calibration = {
                "cutoff": cutoff,
                "users": int(rows.sum()),
                "ece": expected_calibration_error(y, p),
                "bins": reliability_table(y, p).to_dict("records"),  # the figure's bins, printed beside it
                "min_users": MIN_RELIABLE_BIN_USERS,
            }
    _stop_if(cancelled)
    analytics = lifecycle_analytics(
        history, snapshot, frame.loc[(history["cutoff"] == as_of).to_numpy(), "tenure_days"],
        AnalyticsParams.from_config(config.analytics), users=users,
    )  # fmt: skip
    return Overview(
        as_of=as_of, snapshot=snapshot, history=history, cutoffs=present, counts=counts, flow=flow, mix=mix,
        top=ov.top_users(snapshot, n=config.review.top_users), figures=figures, reach=reach,
        calibration=calibration, has_history=has_history, seconds=time.perf_counter() - started,
        timelines=timelines_by_user(history), analytics=analytics,
    )  # fmt: skip


def build_overview(
    models: ModelSet, store: OnlineStore, config: ServingConfig, events_dir: str | None
) -> Overview:
    """The snapshot's decisions (and, with the event data, the earlier cutoffs' and the labels where their
    horizon has closed), summarised and drawn."""
    started = time.perf_counter()
    as_of, frame = overview_inputs(store, config, events_dir, models)
    overview = summarise_overview(
        models, frame, as_of, config, bool(events_dir), users=read_users(events_dir)
    )
    overview.seconds = time.perf_counter() - started
    return overview


class OverviewCache:
    """The overview of the models serving now over the store's current snapshot; rebuilt when either
    changes. One build at a time; readers wait for it.

    `close` (at shutdown) waits only while a build reads the store, never for the summarising: a build
    in progress stops at its next step, so the app stops at once instead of after a whole build."""

    def __init__(self, config: ServingConfig, events_dir: str | None) -> None:
        self.config = config
        self.events_dir = events_dir
        self._lock = threading.Lock()
        self._reading = threading.Lock()  # held while a build reads the store (or the event data)
        self._closing = threading.Event()
        self._key: tuple | None = None
        self._value: Overview | None = None

    def get(self, models: ModelSet, store: OnlineStore) -> Overview:
        info = store.info()
        key = (tuple(sorted(models.versions.items())), None if info is None else info.snapshot_id)
        with self._lock:
            if self._key != key or self._value is None:
                started = time.perf_counter()
                with self._reading:
                    _stop_if(self._closing.is_set)
                    as_of, frame = overview_inputs(store, self.config, self.events_dir, models)
                    users = read_users(self.events_dir)
                value = summarise_overview(
                    models,
                    frame,
                    as_of,
                    self.config,
                    bool(self.events_dir),
                    self._closing.is_set,
                    users=users,
                )
                value.seconds = time.perf_counter() - started
                self._value, self._key = value, key
                log.info("review overview built in %.1f s (%s)", self._value.seconds, key)
            return self._value

    def warm(self, models: ModelSet | None, store: OnlineStore) -> threading.Thread | None:
        """Build the overview in the background (best effort; /review retries on failure)."""
        if models is None:
            return None

        def build() -> None:
            try:
                self.get(models, store)
            except BuildCancelled:
                log.info("the review overview build stopped: the app is shutting down")
            except Exception:
                log.exception("building the review overview failed; /review will retry")

        thread = threading.Thread(target=build, name="review-overview", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop any build in progress; returns once no build reads the store (so the store may close)."""
        self._closing.set()
        with self._reading:
            pass
