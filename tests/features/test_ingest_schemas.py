"""The canonical contract: what validate_canonical accepts and what it refuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.errors
import pyarrow as pa
import pytest

from features.schemas import (
    CAMPAIGN_COLUMNS,
    EVENT_COLUMNS,
    EVENTS,
    SUBSCRIPTION_COLUMNS,
    USER_COLUMNS,
    arrow_schema,
    to_arrow,
    validate_canonical,
)

UTC = pd.DatetimeTZDtype(unit="us", tz="UTC")


def events(**overrides: object) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(["u1", "u2"], dtype="str"),
            "ts": pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True), dtype=UTC),
            "event_type": pd.Series(["login", "purchase"], dtype="str"),
            "amount": [np.nan, 9.5],
            "properties": pd.Series([None, '{"sku": "A1"}'], dtype="str"),
        }
    )
    return frame.assign(**overrides)


def subscriptions(end: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1"] * len(end),
            "plan": ["pro"] * len(end),
            "start": pd.Series(pd.to_datetime(["2024-02-01"] * len(end), utc=True), dtype=UTC),
            "end": pd.Series(pd.to_datetime(end, utc=True), dtype=UTC),
            "mrr": [10.0] * len(end),
        }
    )


def test_column_lists_follow_the_design_contract() -> None:
    assert EVENT_COLUMNS == ("user_id", "ts", "event_type", "amount", "properties")
    assert USER_COLUMNS == ("user_id", "signup_ts", "plan", "channel", "country")
    assert SUBSCRIPTION_COLUMNS == ("user_id", "plan", "start", "end", "mrr")
    assert CAMPAIGN_COLUMNS == ("user_id", "ts", "action", "propensity")
    assert set(EVENTS.columns) == set(EVENT_COLUMNS)


def test_a_canonical_events_frame_and_its_parquet_table_pass() -> None:
    frame = events()

    assert validate_canonical("events", frame) is not None
    table = to_arrow("events", frame)
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert table.schema.equals(arrow_schema("events"), check_metadata=False)
    validate_canonical("events", table)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(events(user_id=pd.Series([None, "u2"], dtype="str")), id="null user_id"),
        pytest.param(events(user_id=["", "u2"]), id="empty user_id"),
        pytest.param(events(ts=pd.to_datetime(["2024-01-01", "2024-01-02"])), id="naive ts"),
        pytest.param(
            events(ts=pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True).as_unit("ns")), id="ns ts"
        ),
        pytest.param(events(amount=["1", "2"]), id="amount as text"),
        pytest.param(events(amount=[np.inf, 1.0]), id="infinite amount"),
        pytest.param(events(properties=["[1]", None]), id="properties not an object"),
        pytest.param(events(session=["s1", "s2"]), id="extra column"),
        pytest.param(events().drop(columns="amount"), id="missing column"),
    ],
)
def test_a_frame_off_the_contract_fails(frame: pd.DataFrame) -> None:
    with pytest.raises(pandera.errors.SchemaErrors):
        validate_canonical("events", frame)


def test_an_arrow_table_with_nanosecond_timestamps_fails() -> None:
    nanoseconds = pa.array(
        [1_704_067_200_000_000_000, 1_704_153_600_000_000_000], type=pa.timestamp("ns", tz="UTC")
    )
    table = to_arrow("events", events()).set_column(1, "ts", nanoseconds)

    with pytest.raises(pandera.errors.SchemaError, match="timestamp"):
        validate_canonical("events", table)


def test_subscription_end_may_be_null_but_not_before_start() -> None:
    validate_canonical("subscriptions", subscriptions([None, "2024-03-01"]))

    with pytest.raises(pandera.errors.SchemaErrors):
        validate_canonical("subscriptions", subscriptions(["2024-01-01"]))


@pytest.mark.parametrize(
    ("propensity", "ok"), [(None, True), (1.0, True), (0.01, True), (0.0, False), (1.2, False)]
)
def test_campaign_propensity_is_null_or_in_zero_one(propensity: float | None, ok: bool) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u1"],
            "ts": pd.Series(pd.to_datetime(["2024-01-01"], utc=True), dtype=UTC),
            "action": ["win_back"],
            "propensity": pd.Series([propensity], dtype="float64"),
        }
    )

    if ok:
        validate_canonical("campaigns", frame)
    else:
        with pytest.raises(pandera.errors.SchemaErrors):
            validate_canonical("campaigns", frame)


def test_users_keep_extra_columns_but_not_repeated_ids() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "signup_ts": pd.Series(pd.to_datetime(["2024-01-01"] * 2, utc=True), dtype=UTC),
            "plan": ["free", None],
            "channel": [None, "ads"],
            "country": ["DE", "FR"],
            "age": [30, 41],
        }
    )

    validate_canonical("users", frame)
    with pytest.raises(pandera.errors.SchemaErrors):
        validate_canonical("users", frame.assign(user_id=["u1", "u1"]))


def test_an_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown input kind 'orders'"):
        validate_canonical("orders", events())
