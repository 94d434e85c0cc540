"""The drift monitor of the models serving now: the online store's snapshot against the features at the champion
churn model's training cutoffs (read from the event data, CLM_EVENTS_DIR), built once per (model versions,
store snapshot) — the same `models.monitoring.monitor` `clm monitor` and the report run. The lift check is
re-read from the decision log on every request (outcomes keep arriving). Each build sets the drift gauges
of /metrics (`DriftGauges`)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from features.build import LabelParams
from features.jobs import feature_history
from features.online import OnlineStore
from features.registry import FeatureParams
from models.catalog import contact_params
from models.drift import DriftThresholds
from models.monitoring import Monitor, describe_snapshot, gauges, lift_calibration, monitor, training_cutoffs
from serving.config import ServingConfig
from serving.decision_log import DecisionLog
from serving.logged_outcomes import logged_outcomes
from serving.review.overview import store_frame
from serving.state import ModelSet

log = logging.getLogger(__name__)
NO_EVENTS_DIR = "drift needs the features the models were trained on: set CLM_EVENTS_DIR to the event data"


class DriftGauges:
    """The drift figures /metrics exports, on the app's registry. Under `clm serve --workers N` each worker sets
    its own (the same numbers: same models, same snapshot) and /metrics shows the largest of the live ones."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, list(labels), registry=registry, multiprocess_mode="livemax")

        self._gauge = gauge
        self.breaches: Gauge | None = None  # made at the first build: no "0 breaches" before any comparison

        self.feature_psi = gauge(
            "clm_drift_feature_psi", "PSI of a feature, training snapshot vs now", ("feature",)
        )
        self.feature_breach = gauge(
            "clm_drift_feature_breach",
            "1 when a feature's drift breaches the [monitor] thresholds",
            ("feature",),
        )
        self.score_psi = gauge("clm_drift_score_psi", "PSI of a score, training snapshot vs now", ("score",))

    def set(self, result: Monitor) -> None:
        values = gauges(result)
        for metric, key in ((self.feature_psi, "feature_psi"), (self.feature_breach, "feature_breach"),
                            (self.score_psi, "score_psi")):  # fmt: skip
            for labels, value in values[key]:
                metric.labels(**labels).set(value)
        if self.breaches is None:
            self.breaches = self._gauge(
                "clm_drift_breaches", "Drift breaches (features, scores, stage and action shares)"
            )
        self.breaches.set(values["breaches"][0][1])


@dataclass
class MonitorView:
    """What /review/monitor shows: the drift report, or why there is none."""

    result: Monitor | None
    note: str | None
    seconds: float


class MonitorCache:
    """The drift report of the models serving now over the store's snapshot; rebuilt when either changes."""

    def __init__(self, config: ServingConfig, events_dir: str | None, drift_gauges: DriftGauges) -> None:
        self.config = config
        self.events_dir = events_dir
        self.gauges = drift_gauges
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._key: tuple | None = None
        self._value: MonitorView | None = None

    def get(
        self, models: ModelSet, store: OnlineStore, decision_log: DecisionLog | None = None
    ) -> MonitorView:
        """The drift report (the lift check read from `decision_log` now, when one is given)."""
        info = store.info()
        key = (tuple(sorted(models.versions.items())), None if info is None else info.snapshot_id)
        with self._lock:
            if self._key != key or self._value is None:
                self._value, self._key = self._build(models, store), key
        view = self._value
        if view.result is not None and decision_log is not None:
            logged = logged_outcomes(decision_log)
            min_users = self.config.monitor.lift_min_users
            lift = lift_calibration(logged, min_users) if len(logged) else None
            note = (f"{len(logged):,} logged decisions with an outcome" if len(logged)
                    else "no logged decision has an outcome (retained / churned) yet")  # fmt: skip
            view = replace(view, result=replace(view.result, lift=lift, lift_note=note))
        return view

    def _build(self, models: ModelSet, store: OnlineStore) -> MonitorView:
        started = time.perf_counter()
        info = store.info()
        cutoffs = training_cutoffs(models)
        if info is None:
            return MonitorView(None, "the online store has no snapshot yet", 0.0)
        if not self.events_dir:
            return MonitorView(None, NO_EVENTS_DIR, 0.0)
        if not cutoffs:
            return MonitorView(None, f"{models.label(models.churn)} records no training cutoffs", 0.0)
        reference = feature_history(
            Path(self.events_dir), cutoffs, params=FeatureParams.from_config(self.config.features),
            label_params=LabelParams.from_config(self.config.labels),
            contacts=contact_params(self.config, models.policy.catalog, models.policy.contact),  # as the store's
        )  # fmt: skip
        if self._closing.is_set():
            return MonitorView(None, "shutting down", 0.0)
        current = store_frame(store).assign(cutoff=info.as_of)
        result = monitor(
            reference, current, models, DriftThresholds.from_config(self.config.monitor),
            reference=describe_snapshot(cutoffs, len(reference), f"training cutoffs of {models.label(models.churn)}:"),
            current=describe_snapshot([info.as_of], len(current), "online store snapshot"),
        )  # fmt: skip
        self.gauges.set(result)
        seconds = time.perf_counter() - started
        log.info("drift monitor built in %.1f s: %d breaches", seconds, len(result.breaches()))
        return MonitorView(result, None, seconds)

    def warm(self, models: ModelSet | None, store: OnlineStore) -> threading.Thread | None:
        """Build in the background (sets the gauges); only with the event data, which the reference needs."""
        if models is None or not self.events_dir:
            return None

        def build() -> None:
            try:
                self.get(models, store)
            except Exception:
                if not self._closing.is_set():
                    log.exception("building the drift monitor failed; /review/monitor will retry")

        thread = threading.Thread(target=build, name="review-monitor", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._closing.set()
