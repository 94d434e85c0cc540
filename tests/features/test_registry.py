"""The feature registry: one list, complete metadata, readable reasons in both languages."""

from __future__ import annotations

import itertools
import re

import pytest

from features.registry import (
    RFM_SEGMENTS,
    FeatureParams,
    as_records,
    build_registry,
    by_name,
    feature_names,
    registry_version,
    rfm_segment,
)


def test_every_feature_has_complete_metadata() -> None:
    registry = build_registry()
    assert len(registry) >= 40
    assert len(set(feature_names(registry))) == len(registry)
    for feature in registry:
        assert feature.dtype in ("float64", "category")
        assert feature.risk_direction in (-1, 0, 1)
        assert feature.description and feature.reason_en and feature.reason_zh
        assert feature.reason(3.0 if feature.dtype == "float64" else "basic", "en")
        assert feature.reason(3.0 if feature.dtype == "float64" else "basic", "zh")


def test_reasons_render_values_in_english_and_chinese() -> None:
    features = by_name(build_registry())
    assert features["activity_change_pct_30d"].reason(-42.0) == (
        "Activity in the last 30 days changed -42% against the 30 days before"
    )
    assert features["activity_change_pct_30d"].reason(-42.0, "zh") == "最近30天活跃度比前30天变化了-42%"
    assert features["days_since_last_event"].reason(12.0) == "No activity for 12 days"
    assert "no record" in features["days_since_last_purchase"].reason(None)


def test_chinese_reasons_are_chinese_for_values_and_missing_values() -> None:
    """No English words leak into the zh text (category values are data, so only numeric features), and a
    missing value reads as the feature's own description, never an empty stem."""
    registry = build_registry()
    for feature in registry:
        assert feature.description_zh, feature.name
        missing = feature.reason(None, "zh")
        assert missing == f"{feature.description_zh}：没有记录", feature.name
        if feature.dtype == "float64":
            text = feature.reason(3.0, "zh")
            assert not re.search(r"[A-Za-z]", text.replace("RFM", "")), (feature.name, text)
    features = by_name(registry)
    assert features["days_to_renewal"].reason(None, "zh") == "距续费的天数：没有记录"
    assert features["login_count_30d"].reason(4.0, "zh") == "最近30天有4次登录"
    # an event type beyond the known ones keeps its own name rather than disappearing
    custom = by_name(build_registry(FeatureParams(count_event_types=("login", "export_pdf"))))
    assert "export pdf" in custom["export_pdf_count_30d"].reason(2.0, "zh")


def test_adding_a_window_in_the_config_adds_its_features_and_changes_the_version() -> None:
    base = build_registry(FeatureParams())
    wider = build_registry(FeatureParams(windows_days=(7, 14, 30, 90)))
    added = set(feature_names(wider)) - set(feature_names(base))
    assert {"events_count_14d", "active_days_14d", "revenue_sum_14d", "contacts_count_14d"} <= added
    assert registry_version(base) != registry_version(wider)
    assert registry_version(base) == registry_version(build_registry(FeatureParams()))


def test_risk_directions_follow_the_domain() -> None:
    features = by_name(build_registry())
    assert features["days_since_last_event"].risk_direction == 1
    assert features["support_ticket_count_30d"].risk_direction == 1
    assert features["active_days_30d"].risk_direction == -1
    assert features["gap_ratio"].risk_direction == 1


def test_rfm_grid_puts_every_score_pair_in_exactly_one_segment() -> None:
    for r, f in itertools.product(range(1, 6), range(1, 6)):
        assert rfm_segment(r, f) in RFM_SEGMENTS
    assert rfm_segment(5, 5) == "Champions"
    assert rfm_segment(1, 1) == "Hibernating"
    assert rfm_segment(0, 3) == "No Purchase Yet"
    with pytest.raises(ValueError):
        rfm_segment(6, 1)


@pytest.mark.parametrize("bad", [{"windows_days": ()}, {"windows_days": (0, 30)}, {"trend_window_days": 0}])
def test_bad_parameters_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        FeatureParams(**bad)


def test_every_feature_carries_its_builder_and_the_version_ignores_it() -> None:
    registry = build_registry()
    assert all(callable(feature.build) for feature in registry)
    # the hash reads names, dtypes and windows only: the same list with other builders is the same version
    import dataclasses

    rebuilt = [dataclasses.replace(feature, build=None) for feature in registry]
    assert registry_version(rebuilt) == registry_version(registry) == "f-c5a0a1192b"
    assert "build" not in next(iter(as_records(registry)))


def test_a_feature_added_to_the_registry_alone_appears_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a feature touches one place: its registry entry (metadata and builder together)."""
    import dataclasses
    import datetime as dt

    import ibis
    import pandas as pd

    import features.build as build

    def with_extra(params: FeatureParams | None = None) -> tuple:
        events_7d = by_name(build_registry(params))["events_count_7d"]
        extra = dataclasses.replace(
            events_7d, name="events_count_7d_doubled", build=lambda t, p: 2 * events_7d.build(t, p)
        )
        return (*build_registry(params), extra)

    monkeypatch.setattr(build, "build_registry", with_extra)
    events = ibis.memtable(
        pd.DataFrame(
            {
                "user_id": ["a", "a", "a"],
                "ts": pd.to_datetime(["2025-02-01", "2025-02-25", "2025-02-27"], utc=True),
                "event_type": ["login", "login", "purchase"],
                "amount": [None, None, 5.0],
            }
        )
    )
    table = build.build_features(events, [dt.date(2025, 3, 1)]).execute()
    assert table.loc[0, "events_count_7d"] == 2
    assert table.loc[0, "events_count_7d_doubled"] == 4
