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
    money_text,
    number_text,
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


@pytest.mark.parametrize(
    ("name", "value", "english"),
    [
        ("subscription_periods", 1.0, "1 subscription period so far"),
        ("subscription_periods", 2.0, "2 subscription periods so far"),
        ("days_since_last_purchase", 1.0, "Last purchase 1 day ago"),
        ("days_since_last_purchase", 0.6, "Last purchase 1 day ago"),  # as it is shown, rounded
        ("days_since_last_purchase", 0.0, "Last purchase 0 days ago"),
        ("contacts_count_30d", 1.0, "Contacted 1 time in the last 30 days"),
        ("login_count_7d", 1.0, "1 login event in the last 7 days"),
        ("plan_changes_total", 1.0, "1 plan change so far"),
    ],
)
def test_english_reasons_say_one_in_the_singular(name: str, value: float, english: str) -> None:
    assert by_name(build_registry())[name].reason(value) == english


def test_money_in_a_reason_carries_the_currency_and_never_reads_minus_zero() -> None:
    features = by_name(build_registry())
    assert features["revenue_sum_total"].reason(5.3, "en", "USD") == "Spent 5.30 USD ever"
    assert features["revenue_sum_total"].reason(5.3, "zh", "USD") == "历史上消费5.30 USD"
    assert features["mrr"].reason(1234.5, "en", "EUR") == "Pays 1,234.50 EUR a month"
    assert features["revenue_diff_30d"].reason(-0.001, "en", "USD") == (
        "Spending changed by 0.00 USD against the 30 days before"
    )
    assert features["revenue_diff_30d"].reason(2.5, "en", "USD").startswith("Spending changed by +2.50 USD")
    assert features["revenue_sum_total"].reason(5.3) == "Spent 5.30 ever"  # no currency given: the number
    for feature in build_registry():  # every money feature says its currency
        if feature.unit == "currency":
            for lang in ("en", "zh"):
                assert "XYZ" in feature.reason(3.0, lang, "XYZ"), (feature.name, lang)


@pytest.mark.parametrize(
    ("amount", "digits", "signed", "text"),
    [(5.3, 2, False, "5.30 USD"), (-0.004, 2, False, "0.00 USD"), (-0.0, 2, False, "0.00 USD"),
     (-0.006, 2, False, "-0.01 USD"), (1234567.891, 0, False, "1,234,568 USD"), (2.0, 2, True, "+2.00 USD"),
     (-0.001, 2, True, "0.00 USD"), (-2.0, 2, True, "-2.00 USD")],
)  # fmt: skip
def test_money_text(amount: float, digits: int, signed: bool, text: str) -> None:
    assert money_text(amount, "USD", digits=digits, signed=signed) == text
    assert number_text(amount, digits, signed=signed) == text.removesuffix(" USD")


def test_rfm_segments_read_in_chinese() -> None:
    segment = by_name(build_registry())["rfm_segment"]
    assert segment.reason("At Risk", "zh") == "RFM分群：有流失风险"
    assert segment.reason("At Risk") == "RFM segment: At Risk"
    assert all(not re.search(r"[A-Za-z]", segment.reason(s, "zh").replace("RFM", "")) for s in RFM_SEGMENTS)
