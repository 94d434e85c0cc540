"""The overview's pieces without a trained world: each user's timeline in one pass (what a groupby per user
gave, at a fraction of the cost), and the cache's shutdown, which stops a build instead of waiting for it."""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np
import pandas as pd
import pytest

from clm.config import load_config
from serving.review import overview as review
from serving.review.overview import BuildCancelled, OverviewCache, summarise_overview, timelines_by_user


def test_timelines_match_a_groupby_per_user() -> None:
    rng = np.random.default_rng(3)
    cutoffs = [dt.date(2025, 6, 1) + dt.timedelta(days=30 * k) for k in range(4)]
    history = pd.DataFrame(
        [{"user_id": f"u{u}", "cutoff": c, "stage": rng.choice(["new", "mature"]), "p_churn": rng.random(),
          "action": "no_action", "clv": 1.0} for c in reversed(cutoffs) for u in rng.permutation(50)]
    )  # fmt: skip
    expected = {
        str(user_id): part.sort_values("cutoff").to_dict("records")
        for user_id, part in history[["user_id", "cutoff", "stage", "p_churn", "action"]].groupby("user_id")
    }
    timelines = timelines_by_user(history)
    assert timelines == expected
    assert [row["cutoff"] for row in timelines["u7"]] == cutoffs


class SlowStore:
    """A store whose snapshot read takes `seconds`; records whether it was read after it closed."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.closed, self.read_after_close = seconds, False, False

    def info(self):
        return type("Info", (), {"as_of": dt.date(2025, 9, 1), "snapshot_id": 1})()

    def user_ids(self) -> list[str]:
        time.sleep(self.seconds)
        self.read_after_close |= self.closed
        return []

    def read_many(self, user_ids):
        return {}


def test_closing_waits_for_the_store_read_but_not_for_the_summary(monkeypatch) -> None:
    summarising = threading.Event()
    stopped = []

    def slow_summary(models, frame, as_of, config, has_history, cancelled, users=None):
        summarising.set()
        deadline = time.monotonic() + 10  # a whole build, unless cancelled
        while time.monotonic() < deadline:
            if cancelled():
                stopped.append(True)
                raise BuildCancelled
            time.sleep(0.01)
        raise AssertionError("the build was not cancelled")

    monkeypatch.setattr(review, "summarise_overview", slow_summary)
    models = type("Models", (), {"versions": {"clm-churn": "1"}})()
    store = SlowStore(seconds=0.3)
    cache = OverviewCache(load_config(), events_dir=None)
    thread = cache.warm(models, store)
    time.sleep(0.05)  # the build is reading the store
    started = time.perf_counter()
    cache.close()
    store.closed = True
    assert 0.1 < time.perf_counter() - started < 2  # it waited for the read, not for the 10 s summary
    thread.join(timeout=2)
    assert not thread.is_alive() and stopped == [True] and not store.read_after_close
    assert summarising.is_set()
    with pytest.raises(BuildCancelled):
        cache.get(models, store)  # a closed cache builds nothing more


def test_summarise_stops_between_steps_once_cancelled(monkeypatch) -> None:
    steps = []
    monkeypatch.setattr(review.ov, "population_decisions", lambda *a, **k: steps.append("decide") or pd.DataFrame(
        {"user_id": ["u1"], "cutoff": [dt.date(2025, 9, 1)], "stage": ["new"], "p_churn": [0.1],
         "p_upgrade": [0.1], "action": ["no_action"], "expected_value": [0.0], "cost": [0.0]}))  # fmt: skip
    for summary in ("stage_counts", "stage_flows", "action_mix"):
        monkeypatch.setattr(review.ov, summary, lambda *a: pd.DataFrame())
    monkeypatch.setattr(review.plots, "figure_svg", lambda *a: steps.append("draw") or "<svg/>")
    models = type("Models", (), {"churn": None, "upgrade": None, "policy": None, "reactivation": None})()
    with pytest.raises(BuildCancelled):
        summarise_overview(models, pd.DataFrame(), dt.date(2025, 9, 1), {"review": {"top_users": 5}}, False,
                           cancelled=lambda: "decide" in steps)  # fmt: skip
    assert steps == ["decide"]
