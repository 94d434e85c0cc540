"""Ingest: every reject reason, the retail mapping example, time zones, Parquet, and the counting invariant."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.datadir import resolve_data_dir
from features.ingest import (
    REJECT_REASONS,
    IngestOptions,
    IngestResult,
    InputError,
    ingest_files,
    ingest_frame,
    ingest_inputs,
    read_input,
)
from features.jobs import connect, load_inputs
from features.mapping import load_mapping, parse_mapping
from features.schemas import validate_canonical
from tests.features.mappings import RETAIL_MAPPING

GOOD_EVENT = "u1,2024-01-01T10:00:00Z,login,,"
EVENT_HEADER = "user_id,ts,event_type,amount,properties"
GOOD_USER = "u1,2024-01-01T00:00:00Z,free,ads,DE"
USER_HEADER = "user_id,signup_ts,plan,channel,country"
GOOD_SUBSCRIPTION = "u1,pro,2024-01-01T00:00:00Z,2024-02-01T00:00:00Z,9.99"
SUBSCRIPTION_HEADER = "user_id,plan,start,end,mrr"
GOOD_CAMPAIGN = "u1,2024-01-01T00:00:00Z,win_back,0.25"
CAMPAIGN_HEADER = "user_id,ts,action,propensity"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def ingest_csv(tmp_path: Path, kind: str, text: str, options: IngestOptions | None = None) -> IngestResult:
    path = write(tmp_path / f"{kind}.csv", text)
    return ingest_inputs({kind: path}, options=options)[kind]


def assert_invariant(result: IngestResult) -> None:
    counts = result.counts
    assert counts.read == counts.accepted + counts.rejected + counts.duplicates
    assert sum(counts.rejected_by_reason.values()) == counts.rejected
    assert len(result.rejects) == counts.rejected + counts.duplicates
    assert len(result.accepted) == counts.accepted


# (kind, header, bad line, expected reason, options). Each file is: a good row, the bad row, a good row.
REASON_CASES = [
    ("events", EVENT_HEADER, ",2024-01-01T10:00:00Z,login,,", "missing_user_id", None),
    ("events", EVENT_HEADER, "u2,,login,,", "missing_ts", None),
    ("events", EVENT_HEADER, "u2,yesterday,login,,", "unparseable_ts", None),
    ("events", EVENT_HEADER, "u2,2024-01-01T10:00:00Z, ,,", "missing_event_type", None),
    ("events", EVENT_HEADER, "u2,2024-01-01T10:00:00Z,purchase,12 EUR,", "unparseable_amount", None),
    ("events", EVENT_HEADER, "u2,2024-01-01T10:00:00Z,purchase,inf,", "unparseable_amount", None),
    ("events", EVENT_HEADER, "u2,2024-01-01T10:00:00Z,purchase,-5,", "negative_amount", None),
    ("events", EVENT_HEADER, 'u2,2024-01-01T10:00:00Z,login,,"[1, 2]"', "unparseable_properties", None),
    ("events", EVENT_HEADER, "u2,2024-01-01T10:00:00Z,login,,{oops", "unparseable_properties", None),
    (
        "events",
        EVENT_HEADER,
        "u2,2024-01-01T10:00:00Z,teleport,,",
        "unknown_event_type",
        IngestOptions(event_types=("login", "purchase")),
    ),
    (
        "events",
        EVENT_HEADER,
        "u2,2024-03-31 02:30:00,login,,",  # clocks jump from 02:00 to 03:00 in Berlin that night
        "invalid_local_time",
        IngestOptions(timezone="Europe/Berlin"),
    ),
    ("events", EVENT_HEADER, "u2,2024-01-01T10:00:00Z,login,,,surplus", "malformed_row", None),
    # a Latin-1 row in a UTF-8 file: that row alone is rejected, with its line
    (
        "events",
        EVENT_HEADER,
        "Jos\xe9,2024-01-01T10:00:00Z,login,,".encode("latin-1"),
        "undecodable_row",
        None,
    ),
    (
        "events",
        EVENT_HEADER,
        'u2,2024-01-01T10:00:00Z,login,,"{""note"": ""longer than the limit""}"',
        "oversized_field",
        IngestOptions(max_field_bytes=24),
    ),
    ("events", EVENT_HEADER, "u\x002,2024-01-01T10:00:00Z,login,,", "control_character", None),
    ("events", EVENT_HEADER, "u2,2024-01-01T10:00:00Z,log\x01in,,", "control_character", None),
    ("events", EVENT_HEADER, "u2,2999-01-01T00:00:00Z,login,,", "implausible_ts", None),
    ("events", EVENT_HEADER, "u2,1969-12-31T23:59:59Z,login,,", "implausible_ts", None),
    ("users", USER_HEADER, "u2,31/12/2023,free,ads,DE", "unparseable_signup_ts", None),
    ("users", USER_HEADER, "u1,2023-06-01T00:00:00Z,pro,seo,FR", "conflicting_user_id", None),
    ("users", USER_HEADER, "u2,0001-01-01T00:00:00Z,free,ads,DE", "implausible_signup_ts", None),
    ("users", USER_HEADER, "u2,2024-01-01T00:00:00Z,free,ads\x7f,DE", "control_character", None),
    ("subscriptions", SUBSCRIPTION_HEADER, "u2,,2024-01-01T00:00:00Z,,9.99", "missing_plan", None),
    ("subscriptions", SUBSCRIPTION_HEADER, "u2,pro,,,9.99", "missing_start", None),
    ("subscriptions", SUBSCRIPTION_HEADER, "u2,pro,soon,,9.99", "unparseable_start", None),
    ("subscriptions", SUBSCRIPTION_HEADER, "u2,pro,2024-01-01T00:00:00Z,later,9.99", "unparseable_end", None),
    ("subscriptions", SUBSCRIPTION_HEADER, "u2,pro,2024-01-01T00:00:00Z,,", "missing_mrr", None),
    ("subscriptions", SUBSCRIPTION_HEADER, "u2,pro,2024-01-01T00:00:00Z,,ten", "unparseable_mrr", None),
    ("subscriptions", SUBSCRIPTION_HEADER, "u2,pro,2024-01-01T00:00:00Z,,-1", "negative_mrr", None),
    (
        "subscriptions",
        SUBSCRIPTION_HEADER,
        "u2,pro,2024-02-01T00:00:00Z,2024-01-01T00:00:00Z,9.99",
        "end_before_start",
        None,
    ),
    ("subscriptions", SUBSCRIPTION_HEADER, "u2,pro,9999-12-31T00:00:00Z,,9.99", "implausible_start", None),
    (
        "subscriptions",
        SUBSCRIPTION_HEADER,
        "u2,pro,2024-01-01T00:00:00Z,1960-01-01,9.99",
        "implausible_end",
        None,
    ),
    ("campaigns", CAMPAIGN_HEADER, "u2,2024-01-01T00:00:00Z,,0.5", "missing_action", None),
    ("campaigns", CAMPAIGN_HEADER, "u2,2024-01-01T00:00:00Z,win\x00back,0.5", "control_character", None),
    ("campaigns", CAMPAIGN_HEADER, "u2,2024-01-01T00:00:00Z,win_back,high", "unparseable_propensity", None),
    ("campaigns", CAMPAIGN_HEADER, "u2,2024-01-01T00:00:00Z,win_back,0", "invalid_propensity", None),
    ("campaigns", CAMPAIGN_HEADER, "u2,2024-01-01T00:00:00Z,win_back,1.5", "invalid_propensity", None),
]
GOOD = {
    "events": GOOD_EVENT,
    "users": GOOD_USER,
    "subscriptions": GOOD_SUBSCRIPTION,
    "campaigns": GOOD_CAMPAIGN,
}
LAST_GOOD = {
    "events": "u3,2024-01-02T10:00:00Z,purchase,3.5,",
    "users": "u3,2024-01-02T00:00:00Z,free,seo,US",
    "subscriptions": "u3,free,2024-01-02T00:00:00Z,,0",
    "campaigns": "u3,2024-01-02T00:00:00Z,discount,",
}


@pytest.mark.parametrize(
    ("kind", "header", "bad_line", "reason", "options"),
    REASON_CASES,
    ids=[f"{case[0]}-{case[3]}-{number}" for number, case in enumerate(REASON_CASES)],
)
def test_each_bad_row_is_rejected_with_its_reason_and_kept_raw(
    tmp_path: Path, kind: str, header: str, bad_line: str, reason: str, options: IngestOptions | None
) -> None:
    if isinstance(bad_line, bytes):
        path = tmp_path / f"{kind}.csv"
        path.write_bytes(f"{header}\n{GOOD[kind]}\n".encode() + bad_line + f"\n{LAST_GOOD[kind]}\n".encode())
        result = ingest_inputs({kind: path}, options=options)[kind]
    else:
        result = ingest_csv(
            tmp_path, kind, f"{header}\n{GOOD[kind]}\n{bad_line}\n{LAST_GOOD[kind]}\n", options
        )

    assert result.counts.rejected_by_reason == {reason: 1}
    assert (result.counts.read, result.counts.accepted, result.counts.duplicates) == (3, 2, 0)
    assert list(result.accepted.index) == [0, 2]
    (reject,) = result.rejects.itertuples(index=False)
    assert (reject.input, reject.row, reject.reason) == (kind, 1, reason)
    assert reject.detail
    raw = json.loads(reject.raw)
    if reason == "malformed_row":
        assert raw == {"line": bad_line}
    elif reason == "undecodable_row":
        assert raw == {"line": bad_line.decode("utf-8", "backslashreplace")}
        assert "line 3" in reject.detail and "0xe9" in reject.detail
    else:
        expected = dict(zip(header.split(","), next(csv.reader([bad_line])), strict=True))
        assert raw == {name: value or None for name, value in expected.items()}
    validate_canonical(kind, result.accepted)


def test_every_documented_reason_is_exercised() -> None:
    covered = {case[3] for case in REASON_CASES} | {"duplicate"}
    assert covered == set(REJECT_REASONS)


def test_exact_duplicates_are_counted_apart_and_kept_in_rejects(tmp_path: Path) -> None:
    result = ingest_csv(
        tmp_path,
        "events",
        f"{EVENT_HEADER}\n{GOOD_EVENT}\nu1,2024-01-01T11:00:00Z,login,,\n{GOOD_EVENT}\n{GOOD_EVENT}\n",
    )

    assert (result.counts.accepted, result.counts.rejected, result.counts.duplicates) == (2, 0, 2)
    assert result.counts.rejected_by_reason == {}
    assert result.rejects["row"].tolist() == [2, 3]
    assert set(result.rejects["reason"]) == {"duplicate"}
    assert result.rejects["detail"].str.endswith("row 0").all()
    assert_invariant(result)


def test_duplicate_key_decides_what_counts_as_the_same_event(tmp_path: Path) -> None:
    text = f"{EVENT_HEADER}\nu1,2024-01-01T10:00:00Z,purchase,5,\nu1,2024-01-01T10:00:00Z,purchase,7,\n"

    by_default = ingest_csv(tmp_path, "events", text)
    by_time_only = ingest_csv(
        tmp_path, "events", text, IngestOptions(duplicate_key=("user_id", "ts", "event_type"))
    )

    assert by_default.counts.duplicates == 0
    assert by_time_only.counts.duplicates == 1
    assert by_time_only.accepted["amount"].tolist() == [5.0]


def test_an_identical_users_row_is_a_duplicate_not_a_conflict(tmp_path: Path) -> None:
    result = ingest_csv(tmp_path, "users", f"{USER_HEADER}\n{GOOD_USER}\n{GOOD_USER}\n")

    assert (result.counts.accepted, result.counts.duplicates, result.counts.rejected) == (1, 1, 0)


def test_retail_mapping_example_loads_as_written(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path / "retail.toml", RETAIL_MAPPING))
    source = write(
        tmp_path / "transactions.csv",
        "customer_id,date,quantity,dollars\n1001,20240105,2,19.98\n1002,20240229,1,5.00\n1001,20241231,12,0\n",
    )

    run = ingest_files(tmp_path / "data", events=source, mapping=mapping)
    table = pq.read_table(resolve_data_dir(tmp_path / "data") / "events.parquet")
    events = table.to_pandas()

    assert run.counts["events"].as_dict()["accepted"] == 3
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("user_id").type == pa.string()
    assert events["user_id"].tolist() == ["1001", "1002", "1001"]
    assert events["ts"].tolist() == [
        pd.Timestamp("2024-01-05", tz="UTC"),
        pd.Timestamp("2024-02-29", tz="UTC"),
        pd.Timestamp("2024-12-31", tz="UTC"),
    ]
    assert events["event_type"].tolist() == ["purchase"] * 3
    assert events["amount"].tolist() == [19.98, 5.0, 0.0]
    assert [json.loads(text) for text in events["properties"]] == [
        {"quantity": 2},
        {"quantity": 1},
        {"quantity": 12},
    ]
    validate_canonical("events", table)


def test_retail_mapping_rejects_a_bad_date_and_a_missing_customer(tmp_path: Path) -> None:
    mapping = parse_mapping(
        {"events": {"user_id": "customer_id", "ts": {"column": "date", "format": "%Y%m%d"}}}
    )
    frame = pd.DataFrame(
        {
            "customer_id": ["1", None, "3"],
            "date": ["20240105", "20240105", "2024-01-05"],
            "event_type": ["purchase"] * 3,
        },
        dtype="str",
    )

    result = ingest_frame("events", frame, mapping=mapping["events"])

    assert result.rejects["reason"].tolist() == ["missing_user_id", "unparseable_ts"]
    assert "%Y%m%d" in result.rejects["detail"].iloc[1]


def test_naive_timestamps_take_the_configured_zone_and_offsets_are_kept(tmp_path: Path) -> None:
    text = (
        f"{EVENT_HEADER}\n"
        "u1,2024-01-15 09:00:00,login,,\n"  # EST, UTC-5
        "u1,2024-07-15T09:00:00,login,,\n"  # EDT, UTC-4
        "u1,2024-01-15T09:00:00+01:00,login,,\n"  # explicit offset: the zone does not apply
        "u1,2024-01-15T09:00:00Z,login,,\n"
        "u1,2024-01-16,login,,\n"  # a date alone is midnight local time
    )

    result = ingest_csv(tmp_path, "events", text, IngestOptions(timezone="America/New_York"))

    assert result.accepted["ts"].tolist() == [
        pd.Timestamp("2024-01-15 14:00", tz="UTC"),
        pd.Timestamp("2024-07-15 13:00", tz="UTC"),
        pd.Timestamp("2024-01-15 08:00", tz="UTC"),
        pd.Timestamp("2024-01-15 09:00", tz="UTC"),
        pd.Timestamp("2024-01-16 05:00", tz="UTC"),
    ]
    assert str(result.accepted["ts"].dtype) == "datetime64[us, UTC]"


def test_a_column_timezone_in_the_mapping_overrides_the_default_zone() -> None:
    mapping = parse_mapping({"events": {"ts": {"column": "local", "timezone": "Asia/Tokyo"}}})
    frame = pd.DataFrame(
        {"user_id": ["u1"], "local": ["2024-01-01 09:00:00"], "event_type": ["login"]}, dtype="str"
    )

    result = ingest_frame(
        "events", frame, mapping=mapping["events"], options=IngestOptions(timezone="America/New_York")
    )

    assert result.accepted["ts"].tolist() == [pd.Timestamp("2024-01-01 00:00", tz="UTC")]


def test_epoch_numbers_with_a_unit_are_utc() -> None:
    mapping = parse_mapping({"events": {"ts": {"column": "epoch_ms", "unit": "ms"}}})
    frame = pd.DataFrame(
        {"user_id": ["u1", "u2"], "epoch_ms": ["1704067200000", "soon"], "event_type": ["login"] * 2}
    )

    result = ingest_frame(
        "events", frame, mapping=mapping["events"], options=IngestOptions(timezone="Asia/Tokyo")
    )

    assert result.accepted["ts"].tolist() == [pd.Timestamp("2024-01-01", tz="UTC")]
    assert result.rejects["reason"].tolist() == ["unparseable_ts"]


def test_parquet_input_with_native_types(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": pd.array([101, 102, None], dtype="Int64"),
            "ts": pd.to_datetime(["2024-01-01 09:00", "2024-06-01 09:00", "2024-01-02 09:00"]).tz_localize(
                "Europe/Paris"
            ),
            "event_type": ["purchase", "purchase", "login"],
            "amount": [10.0, np.nan, 1.0],
        }
    )
    path = tmp_path / "events.pq"
    frame.to_parquet(path)

    result = ingest_inputs({"events": path})["events"]

    assert result.accepted["user_id"].tolist() == ["101", "102"]
    assert result.accepted["ts"].tolist() == [
        pd.Timestamp("2024-01-01 08:00", tz="UTC"),
        pd.Timestamp("2024-06-01 07:00", tz="UTC"),
    ]
    assert result.accepted["amount"].isna().tolist() == [False, True]
    assert result.rejects["reason"].tolist() == ["missing_user_id"]
    assert json.loads(result.rejects["raw"].iloc[0])["user_id"] is None


def test_naive_parquet_timestamps_take_the_configured_zone(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {"user_id": ["u1"], "ts": pd.to_datetime(["2024-01-01 09:00"]), "event_type": ["login"]}
    ).to_parquet(path)

    result = ingest_inputs({"events": path}, options=IngestOptions(timezone="Asia/Kolkata"))["events"]

    assert result.accepted["ts"].tolist() == [pd.Timestamp("2024-01-01 03:30", tz="UTC")]


def test_gzipped_csv_is_read(tmp_path: Path) -> None:
    path = tmp_path / "events.csv.gz"
    path.write_bytes(gzip.compress(f"{EVENT_HEADER}\n{GOOD_EVENT}\n".encode()))

    assert ingest_inputs({"events": path})["events"].counts.accepted == 1


def test_csv_text_is_kept_as_text(tmp_path: Path) -> None:
    result = ingest_csv(tmp_path, "events", f"{EVENT_HEADER}\n00123,2024-01-01T10:00:00Z, login ,1.50,\n")

    assert result.accepted["user_id"].tolist() == ["00123"]
    assert result.accepted["event_type"].tolist() == ["login"]


def test_packed_properties_are_valid_json_whatever_the_text() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "ts": ["2024-01-01T00:00:00Z"] * 3,
            "event_type": ["view"] * 3,
            "zip": ["01234", "99999", None],
            "note": ['say "hi"', "line\nbreak\\", "tab\tand\x01control"],
            "qty": ["1", "2.5", None],
        },
        dtype="str",
    )
    mapping = parse_mapping({"events": {"properties": ["zip", "note", "qty"]}})

    result = ingest_frame("events", frame, mapping=mapping["events"])

    assert [json.loads(text) for text in result.accepted["properties"]] == [
        {"zip": "01234", "note": 'say "hi"', "qty": 1.0},
        {"zip": "99999", "note": "line\nbreak\\", "qty": 2.5},
        {"zip": None, "note": "tab\tand\x01control", "qty": None},
    ]


def test_a_json_properties_column_passes_through() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u1"],
            "ts": ["2024-01-01T00:00:00Z"],
            "event_type": ["view"],
            "properties": ['{"page": "home"}'],
        }
    )

    result = ingest_frame("events", frame)

    assert json.loads(result.accepted["properties"].iloc[0]) == {"page": "home"}


def test_users_keep_extra_columns_and_events_report_ignored_ones(tmp_path: Path) -> None:
    users = ingest_csv(tmp_path, "users", f"{USER_HEADER},age,segment\n{GOOD_USER},34,gold\n")
    events = ingest_csv(tmp_path, "events", f"{EVENT_HEADER},session\n{GOOD_EVENT},s1\n")

    assert users.accepted[["age", "segment"]].to_dict("records") == [{"age": 34, "segment": "gold"}]
    assert events.counts.ignored_columns == ("session",)
    assert "session" not in events.accepted.columns


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    result = ingest_csv(tmp_path, "events", "user_id,ts,event_type\nu1,2024-01-01T00:00:00Z,login\n")

    assert result.accepted["amount"].isna().all()
    assert result.accepted["properties"].isna().all()
    validate_canonical("events", result.accepted)


def test_a_missing_required_column_names_the_file_and_the_column() -> None:
    frame = pd.DataFrame({"user_id": ["u1"], "event_type": ["login"]})

    with pytest.raises(InputError, match=r"export\.csv.*'ts'"):
        ingest_frame("events", frame, source="export.csv")


def test_a_mapped_column_that_is_absent_is_an_input_error() -> None:
    mapping = parse_mapping({"events": {"amount": "dollars"}})
    frame = pd.DataFrame({"user_id": ["u1"], "ts": ["2024-01-01"], "event_type": ["login"]})

    with pytest.raises(InputError, match="'dollars'"):
        ingest_frame("events", frame, mapping=mapping["events"], source="export.csv")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.csv", None, "file not found"),
        ("events.json", "{}", "unsupported file type"),
        ("events.parquet", "not parquet", "cannot be read as Parquet"),
        ("events.csv", "", "cannot be read as CSV"),
    ],
)
def test_unusable_files_are_input_errors(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        write(path, content)

    with pytest.raises(InputError, match=message):
        read_input(path)


def test_options_reject_an_unknown_time_zone_or_key() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        IngestOptions(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="duplicate_key"):
        IngestOptions(duplicate_key=("user_id", "session"))


USER_IDS = st.sampled_from(["u1", "u2", "", " "])
TIMESTAMPS = st.sampled_from(
    ["2024-01-01T10:00:00Z", "2024-01-01 10:00:00", "2024-01-01", "2024-03-31 02:30:00", "not a date", ""]
)
EVENT_TYPES = st.sampled_from(["login", "purchase", ""])
AMOUNTS = st.sampled_from(["", "1.5", "-2", "abc", "inf", "0"])
PROPERTIES = st.sampled_from(["", '{"a": 1}', "[1]", "{bad", '{"b": "x, y"}'])
ROWS = st.lists(
    st.one_of(
        st.tuples(USER_IDS, TIMESTAMPS, EVENT_TYPES, AMOUNTS, PROPERTIES),
        st.tuples(USER_IDS, TIMESTAMPS, EVENT_TYPES, AMOUNTS, PROPERTIES, st.just("surplus")),
    ),
    min_size=0,
    max_size=40,
)


@settings(max_examples=50, deadline=None)
@given(rows=ROWS)
def test_read_is_accepted_plus_rejected_plus_duplicates(rows: list[tuple[str, ...]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EVENT_HEADER.split(","))
    writer.writerows(rows)
    with tempfile.TemporaryDirectory() as directory:
        path = write(Path(directory) / "events.csv", buffer.getvalue())
        result = ingest_inputs({"events": path}, options=IngestOptions(timezone="Europe/Berlin"))["events"]

    assert result.counts.read == len(rows)
    assert_invariant(result)
    rejected_rows = set(result.rejects["row"])
    assert rejected_rows.isdisjoint(result.accepted.index)
    assert rejected_rows | set(result.accepted.index) == set(range(len(rows)))
    assert set(result.rejects["reason"]) <= set(REJECT_REASONS)
    validate_canonical("events", result.accepted)


def test_row_numbers_count_records_not_lines(tmp_path: Path) -> None:
    text = (
        "user_id,ts,event_type,note\n"
        'u1,2024-01-01T00:00:00Z,login,"two\nlines"\n'
        "u2,2024-01-01T00:00:00Z,login,a,surplus\n"
        ",2024-01-01T00:00:00Z,login,b\n"
        "u4,2024-01-01T00:00:00Z,login,c\n"
    )

    result = ingest_csv(tmp_path, "events", text)

    assert list(result.accepted.index) == [0, 3]
    assert result.rejects[["row", "reason"]].values.tolist() == [[1, "malformed_row"], [2, "missing_user_id"]]
    assert result.counts.ignored_columns == ("note",)


def test_constant_values_fill_fields_the_export_lacks() -> None:
    mapping = parse_mapping(
        {
            "users": {"country": {"value": "DE"}, "signup_ts": {"value": "2024-01-01 00:00:00"}},
            "campaigns": {"propensity": {"value": 0.5}},
        }
    )
    users = pd.DataFrame({"user_id": ["u1", "u2"]})
    campaigns = pd.DataFrame({"user_id": ["u1"], "ts": ["2024-02-01T00:00:00Z"], "action": ["win_back"]})

    users_result = ingest_frame(
        "users", users, mapping=mapping["users"], options=IngestOptions(timezone="Asia/Tokyo")
    )
    campaigns_result = ingest_frame("campaigns", campaigns, mapping=mapping["campaigns"])

    assert users_result.accepted["country"].tolist() == ["DE", "DE"]
    assert users_result.accepted["signup_ts"].tolist() == [pd.Timestamp("2023-12-31 15:00", tz="UTC")] * 2
    assert campaigns_result.accepted["propensity"].tolist() == [0.5]


def test_a_conflicting_users_row_points_at_the_first_one(tmp_path: Path) -> None:
    result = ingest_csv(
        tmp_path,
        "users",
        f"{USER_HEADER}\nu0,2024-01-01,free,ads,DE\n{GOOD_USER}\nu1,2023-06-01,pro,seo,FR\n",
    )

    assert result.rejects[["row", "reason"]].values.tolist() == [[2, "conflicting_user_id"]]
    assert result.rejects["detail"].iloc[0].endswith("row 1")


def test_an_absurd_timestamp_is_rejected_and_never_sets_the_data_end(tmp_path: Path) -> None:
    text = (
        f"{EVENT_HEADER}\nu1,2024-01-01T10:00:00Z,login,,\nu2,2999-01-01T00:00:00Z,login,,\n"
        "u3,2024-03-01T10:00:00Z,login,,\nu4,2024-03-02T10:00:00+05:00,login,,\n"
    )
    source = write(tmp_path / "events.csv", text)

    run = ingest_files(tmp_path / "data", events=source)

    assert run.counts["events"].rejected_by_reason == {"implausible_ts": 1}
    rejects = pd.read_parquet(run.data_path / "rejects.parquet")
    assert rejects[["row", "reason"]].values.tolist() == [[1, "implausible_ts"]]
    assert (
        "2999-01-01" in rejects["detail"].iloc[0] and "ingest.max_days_after_run" in rejects["detail"].iloc[0]
    )
    # the features' data end, the online store's snapshot date and every "as of" derive from load_inputs
    assert load_inputs(connect(), tmp_path / "data").data_end == dt.date(2024, 3, 3)


def test_the_window_follows_the_run_clock_and_the_config(tmp_path: Path) -> None:
    clock = dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC)
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "ts": [
                "2024-06-02T11:59:00Z",
                "2024-06-02T12:01:00Z",
                "1999-12-31T23:00:00Z",
                "2000-01-01T00:00:00Z",
            ],
            "event_type": ["login"] * 4,
        }
    )

    default = ingest_frame("events", frame, options=IngestOptions(run_clock=clock))
    narrow = ingest_frame(
        "events",
        frame,
        options=IngestOptions(run_clock=clock, max_days_after_run=0, earliest_timestamp=dt.date(2000, 1, 1)),
    )

    assert default.accepted["user_id"].tolist() == ["u1", "u3", "u4"]
    assert narrow.accepted["user_id"].tolist() == ["u4"]
    assert narrow.rejects["reason"].tolist() == ["implausible_ts"] * 3


def test_a_future_subscription_end_is_a_scheduled_one_and_kept() -> None:
    frame = pd.DataFrame(
        {"user_id": ["u1"], "plan": ["pro"], "start": ["2024-01-01"], "end": ["9999-12-31"], "mrr": ["9.99"]}
    )

    result = ingest_frame("subscriptions", frame)

    assert result.counts.accepted == 1
    assert result.accepted["end"].iloc[0] == pd.Timestamp("9999-12-31", tz="UTC")


QUOTED_EVENTS = (
    "user_id,ts,event_type,note\r\n"
    'u1,2024-01-01T00:00:00Z,login,"two\nlines, and a comma"\r\n'
    "\r\n"
    "u2,2024-01-01T00:00:00Z,login,a,surplus\r\n"
    ",2024-01-01T00:00:00Z,login,b\r\n"
    '{bad}u4,2024-01-01T00:00:00Z,login,"say ""hi"""\r\n'
    "u5,2024-01-01T00:00:00Z,login,c\r\n"
)


def test_an_undecodable_row_is_rejected_alone_and_the_rest_keeps_its_row_numbers(tmp_path: Path) -> None:
    clean = tmp_path / "clean.csv"
    clean.write_bytes(QUOTED_EVENTS.replace("{bad}", "").encode())
    latin = tmp_path / "latin.csv"
    latin.write_bytes(QUOTED_EVENTS.replace("{bad}", "Jos\u00e9").encode("latin-1"))

    expected = ingest_inputs({"events": clean})["events"]
    result = ingest_inputs({"events": latin})["events"]

    assert list(expected.accepted.index) == [0, 3, 4]
    assert list(result.accepted.index) == [0, 4]
    pd.testing.assert_frame_equal(result.accepted, expected.accepted.drop(index=3))
    assert result.rejects[["row", "reason"]].values.tolist() == [
        [1, "malformed_row"],
        [2, "missing_user_id"],
        [3, "undecodable_row"],
    ]
    detail = result.rejects["detail"].iloc[2]
    assert detail.startswith("row 3 (line 7) is not UTF-8 text: byte 0xe9")


def test_a_10_mb_field_is_rejected_with_its_row_and_the_rest_of_the_file_is_read(tmp_path: Path) -> None:
    huge = '"{""blob"": ""' + "x" * 10_000_000 + '""}"'
    path = tmp_path / "events.csv"
    path.write_text(
        f"{EVENT_HEADER}\n{GOOD_EVENT}\nu2,2024-01-01T10:00:00Z,login,,{huge}\n{LAST_GOOD['events']}\n",
        encoding="utf-8",
    )

    result = ingest_inputs({"events": path})["events"]

    assert result.counts.rejected_by_reason == {"oversized_field": 1}
    assert list(result.accepted.index) == [0, 2]
    (reject,) = result.rejects.itertuples(index=False)
    assert reject.row == 1
    assert reject.detail == (
        "field 'properties' of row 1 (line 3) is 10,000,012 bytes, over the limit of 1,048,576 (ingest.max_field_bytes)"
    )
    assert len(reject.raw) < 2_000 and "bytes in all]" in reject.raw
