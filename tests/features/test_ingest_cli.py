"""`clm ingest` end to end: exit codes, nothing half-written, --json lines, and where the time zone comes from."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from clm.cli import app
from features.datadir import resolve_data_dir

REQUIRED_KEYS = {"input", "read", "accepted", "rejected", "rejected_by_reason", "duplicates"}
EVENTS = (
    "user_id,ts,event_type,amount\n"
    "u1,2024-01-01 09:00:00,login,\n"
    "u1,2024-01-01 09:00:00,login,\n"
    "u2,2024-01-02T09:00:00Z,purchase,-3\n"
    ",2024-01-03T09:00:00Z,purchase,5\n"
    "u3,2024-01-04T09:00:00Z,login,\n"
    "u4,2024-01-05T09:00:00Z,purchase,7\n"
)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No clm.toml or CLM_* variable of the developer's leaks into these runs."""
    monkeypatch.chdir(tmp_path)
    for name in ("CLM_TIMEZONE", "CLM_CONFIG", "CLM_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run(*args: str | Path, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["ingest", *map(str, args)], env=env)


def test_json_prints_one_object_per_input_with_the_required_keys(tmp_path: Path) -> None:
    events = write(tmp_path / "events.csv", EVENTS)
    users = write(tmp_path / "users.csv", "user_id,signup_ts\nu1,2023-12-01\nu2,2023-12-02\n")

    result = run("--events", events, "--users", users, "--out", tmp_path / "data", "--json")

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    summaries = [json.loads(line) for line in lines]
    assert [summary["input"] for summary in summaries] == ["events", "users"]
    for summary in summaries:
        assert set(summary) >= REQUIRED_KEYS
        assert summary["read"] == summary["accepted"] + summary["rejected"] + summary["duplicates"]
    assert summaries[0] | {"ignored_columns": []} == {
        "input": "events",
        "read": 6,
        "accepted": 3,
        "rejected": 2,
        "rejected_by_reason": {"missing_user_id": 1, "negative_amount": 1},
        "duplicates": 1,
        "ignored_columns": [],
    }
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == ["current.json", "versions"]
    current = resolve_data_dir(tmp_path / "data")
    assert sorted(path.name for path in current.iterdir()) == [
        "events.parquet",
        "rejects.parquet",
        "users.parquet",
    ]
    rejects = pd.read_parquet(current / "rejects.parquet")
    assert rejects[["input", "row", "reason"]].values.tolist() == [
        ["events", 1, "duplicate"],
        ["events", 2, "negative_amount"],
        ["events", 3, "missing_user_id"],
    ]


def test_the_summary_table_is_printed_without_json(tmp_path: Path) -> None:
    events = write(tmp_path / "events.csv", EVENTS)

    result = run("--events", events, "--out", tmp_path / "data")

    assert result.exit_code == 0, result.stderr
    assert "negative_amount" in result.stdout
    assert "rejects.parquet" in result.stdout


def test_a_missing_required_column_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    events = write(tmp_path / "events.csv", "user_id,when,event_type\nu1,2024-01-01,login\n")
    out = tmp_path / "data"

    result = run("--events", events, "--out", out)

    assert result.exit_code == 2
    assert "events.csv" in result.stderr
    assert "'ts'" in result.stderr
    assert not out.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["events.csv"]


def test_a_bad_optional_input_leaves_an_existing_directory_untouched(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    write(out / "events.parquet", "previous run")
    events = write(tmp_path / "events.csv", EVENTS)
    campaigns = write(tmp_path / "campaigns.csv", "user_id,ts\nu1,2024-01-01\n")

    result = run("--events", events, "--campaigns", campaigns, "--out", out)

    assert result.exit_code == 2
    assert "campaigns.csv" in result.stderr
    assert "'action'" in result.stderr
    assert [path.name for path in out.iterdir()] == ["events.parquet"]
    assert (out / "events.parquet").read_text() == "previous run"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["campaigns.csv", "data", "events.csv"]


def test_an_existing_directory_keeps_the_files_this_run_does_not_write(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    write(out / "users.parquet", "from an earlier run")
    write(out / "events.parquet", "stale")
    events = write(tmp_path / "events.csv", EVENTS)

    result = run("--events", events, "--out", out)

    assert result.exit_code == 0, result.stderr
    current = resolve_data_dir(out)
    assert (current / "users.parquet").read_text() == "from an earlier run"
    assert len(pd.read_parquet(current / "events.parquet")) == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "events.csv"]
    # the flat directory was migrated (and said so); the old files are the previous version
    assert "migrated" in result.stdout and "kept users" in result.stdout
    assert sorted(path.name for path in out.iterdir()) == ["current.json", "versions"]
    (previous,) = [path for path in (out / "versions").iterdir() if path != current]
    assert (previous / "events.parquet").read_text() == "stale"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"events.csv": None}, "file not found"),
        ({"events.txt": "user_id,ts,event_type\n"}, "unsupported file type"),
        ({"events.parquet": "garbage"}, "cannot be read as Parquet"),
    ],
)
def test_unusable_files_exit_2_naming_the_file(
    tmp_path: Path, files: dict[str, str | None], message: str
) -> None:
    (name, content), *_ = files.items()
    if content is not None:
        write(tmp_path / name, content)

    result = run("--events", tmp_path / name, "--out", tmp_path / "data")

    assert result.exit_code == 2
    assert name in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("option", "text", "key"),
    [
        ("--mapping", '[events]\nuser = "customer_id"\n', "[events].user"),
        ("--config", '[ingest]\nduplicate_key = "user_id"\n', "ingest.duplicate_key"),
    ],
    ids=["mapping", "config"],
)
def test_a_bad_mapping_or_config_file_exits_2_naming_the_key(
    tmp_path: Path, option: str, text: str, key: str
) -> None:
    events = write(tmp_path / "events.csv", EVENTS)
    settings = write(tmp_path / "settings.toml", text)

    result = run("--events", events, option, settings, "--out", tmp_path / "data")

    assert result.exit_code == 2
    assert key in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_bad_strptime_directive_exits_2_naming_the_mapping_key(tmp_path: Path) -> None:
    events = write(tmp_path / "events.csv", EVENTS)
    mapping = write(tmp_path / "m.toml", '[events]\nts = { column = "ts", format = "%Y-%m-%Q" }\n')

    result = run("--events", events, "--mapping", mapping, "--out", tmp_path / "data")

    assert result.exit_code == 2
    assert "[events].ts.format: '%Y-%m-%Q' is not a usable strptime format" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "data").exists()


def _first_ts(out: Path) -> pd.Timestamp:
    return pd.read_parquet(resolve_data_dir(out) / "events.parquet")["ts"].iloc[0]


def test_timezone_comes_from_the_option_then_settings_then_config(tmp_path: Path) -> None:
    events = write(tmp_path / "events.csv", EVENTS)
    config = write(tmp_path / "config.toml", '[ingest]\ntimezone = "Asia/Tokyo"\n')

    from_config = run("--events", events, "--config", config, "--out", tmp_path / "a")
    from_settings = run(
        "--events", events, "--config", config, "--out", tmp_path / "b", env={"CLM_TIMEZONE": "Europe/Berlin"}
    )
    from_option = run(
        "--events",
        events,
        "--config",
        config,
        "--timezone",
        "America/New_York",
        "--out",
        tmp_path / "c",
        env={"CLM_TIMEZONE": "Europe/Berlin"},
    )
    default = run("--events", events, "--out", tmp_path / "d")

    assert [r.exit_code for r in (from_config, from_settings, from_option, default)] == [0, 0, 0, 0]
    assert _first_ts(tmp_path / "a") == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    assert _first_ts(tmp_path / "b") == pd.Timestamp("2024-01-01 08:00", tz="UTC")
    assert _first_ts(tmp_path / "c") == pd.Timestamp("2024-01-01 14:00", tz="UTC")
    assert _first_ts(tmp_path / "d") == pd.Timestamp("2024-01-01 09:00", tz="UTC")


def test_an_unknown_timezone_exits_2(tmp_path: Path) -> None:
    events = write(tmp_path / "events.csv", EVENTS)

    result = run("--events", events, "--timezone", "Mars/Olympus", "--out", tmp_path / "data")

    assert result.exit_code == 2
    assert "Mars/Olympus" in result.stderr


def test_configured_event_types_and_duplicate_key_apply(tmp_path: Path) -> None:
    events = write(
        tmp_path / "events.csv",
        "user_id,ts,event_type,amount\nu1,2024-01-01,login,1\nu1,2024-01-01,login,2\n",
    )
    key = write(tmp_path / "key.toml", '[ingest]\nduplicate_key = ["user_id", "ts", "event_type"]\n')
    types = write(tmp_path / "types.toml", '[ingest]\nevent_types = ["view"]\n')

    default = run("--events", events, "--out", tmp_path / "a", "--json")
    by_key = run("--events", events, "--config", key, "--out", tmp_path / "b", "--json")
    by_types = run("--events", events, "--config", types, "--out", tmp_path / "c", "--json")

    assert json.loads(default.stdout)["duplicates"] == 0
    assert json.loads(by_key.stdout)["duplicates"] == 1
    # every event rejected: the run is refused and writes nothing
    assert by_types.exit_code == 2
    assert "none of 2 rows accepted (rejected: unknown_event_type 2)" in " ".join(by_types.stderr.split())
    assert not (tmp_path / "c").exists()


def test_the_configured_time_window_and_field_limit_apply(tmp_path: Path) -> None:
    events = write(tmp_path / "events.csv", EVENTS)
    window = write(
        tmp_path / "window.toml", '[ingest]\nearliest_timestamp = "2024-01-02"\nmin_accepted_share = 0.0\n'
    )
    limit = write(tmp_path / "limit.toml", "[ingest]\nmax_field_bytes = 2\nmin_accepted_share = 0.0\n")

    by_window = run("--events", events, "--config", window, "--out", tmp_path / "a", "--json")
    by_limit = run("--events", events, "--config", limit, "--out", tmp_path / "b", "--json")

    assert json.loads(by_window.stdout)["rejected_by_reason"] == {
        "implausible_ts": 2,
        "missing_user_id": 1,
        "negative_amount": 1,
    }
    # every row has a timestamp longer than 2 bytes: nothing is accepted, the run is refused
    assert by_limit.exit_code == 2
    assert "oversized_field 6" in " ".join(by_limit.stderr.split())
    # a refused run writes no rejects file: the first rejected rows are printed instead
    assert "events row 0: oversized_field: field 'ts' is 19 bytes" in " ".join(by_limit.stderr.split())
