"""Ingest is all or nothing: a refused run or a killed one leaves a consistent data directory (events and
rejects of one run), leftovers are cleaned by the next run, and the flat layout of earlier runs still reads."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from clm.cli import app
from features.datadir import (
    CANONICAL_FILES,
    MIGRATION_STEPS,
    POINTER_FILE,
    STEPS,
    VERSIONS_DIR,
    DataDirectoryBusy,
    DataDirectoryError,
    DataDirectoryWriter,
    current_version,
    resolve_data_dir,
)
from features.ingest import IngestRefused, ingest_files
from features.jobs import connect, load_inputs

HEADER = "user_id,ts,event_type,amount\n"
# the old run: 4 events, one rejected for a negative purchase; the new run: 3 events, one without a user
OLD = HEADER + (
    "a1,2024-01-01T09:00:00Z,login,\n"
    "a2,2024-01-02T09:00:00Z,purchase,-3\n"
    "a3,2024-01-03T09:00:00Z,login,\n"
    "a4,2024-01-04T09:00:00Z,login,\n"
    "a5,2024-01-05T09:00:00Z,login,\n"
)
NEW = HEADER + (
    "b1,2024-02-01T09:00:00Z,login,\n"
    ",2024-02-02T09:00:00Z,login,\n"
    "b3,2024-02-03T09:00:00Z,login,\n"
    "b4,2024-02-04T09:00:00Z,login,\n"
)
OLD_STATE = (["a1", "a3", "a4", "a5"], ["negative_amount"])
NEW_STATE = (["b1", "b3", "b4"], ["missing_user_id"])


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def state(data: Path) -> tuple[list[str], list[str]]:
    """(accepted user ids, reject reasons) of the directory's current version, read through the resolver."""
    current = resolve_data_dir(data)
    events = pd.read_parquet(current / "events.parquet")
    rejects = pd.read_parquet(current / "rejects.parquet")
    return sorted(events["user_id"]), rejects["reason"].tolist()


def leftovers(data: Path) -> list[str]:
    """Anything in or beside DIR that is neither the current version, the kept previous one, nor the pointer."""
    found = [path.name for path in data.parent.glob(f".{data.name}.*.partial")]
    found += [name for name in CANONICAL_FILES if (data / name).exists()]
    versions = sorted(path.name for path in (data / VERSIONS_DIR).iterdir())
    pointer = current_version(data)
    found += [name for name in versions if name.endswith(".partial")]
    if len(versions) > 2 or pointer not in versions:
        found.append(f"versions: {versions}")
    return found


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path / "old.csv", OLD), write(tmp_path / "new.csv", NEW)


def flat_directory(tmp_path: Path, source: Path) -> Path:
    """A data directory as ingest wrote it before versions: the canonical files directly in DIR."""
    ingest_files(tmp_path / "build", events=source)
    data = tmp_path / "data"
    shutil.copytree(resolve_data_dir(tmp_path / "build"), data)
    shutil.rmtree(tmp_path / "build")
    return data


def run_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("CLM_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "clm.cli", "ingest", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def test_a_header_only_file_into_an_existing_directory_keeps_the_old_data_and_exits_2(
    tmp_path: Path, inputs: tuple[Path, Path]
) -> None:
    old, _ = inputs
    data = tmp_path / "data"
    ingest_files(data, events=old)
    version = current_version(data)
    header_only = write(tmp_path / "empty.csv", HEADER)

    result = CliRunner().invoke(app, ["ingest", "--events", str(header_only), "--out", str(data)])

    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "refused, nothing written: events: the file has no data rows" in message
    assert f"still holds version {version}" in message
    assert "Traceback" not in result.output
    assert current_version(data) == version
    assert state(data) == OLD_STATE


def test_a_run_below_the_accepted_share_is_refused_and_the_share_is_configurable(
    tmp_path: Path, inputs: tuple[Path, Path]
) -> None:
    old, _ = inputs
    data = tmp_path / "data"
    ingest_files(data, events=old)
    # one good row in four: 25 %
    poor = write(
        tmp_path / "poor.csv",
        HEADER + "c1,2024-03-01,login,\n,2024-03-02,login,\nc3,soon,login,\nc4,,login,\n",
    )

    with pytest.raises(
        IngestRefused, match=r"1 of 4 rows accepted \(25%\), below ingest.min_accepted_share 50%"
    ):
        ingest_files(data, events=poor)
    assert state(data) == OLD_STATE

    lenient = write(tmp_path / "lenient.toml", "[ingest]\nmin_accepted_share = 0.2\n")
    result = CliRunner().invoke(
        app, ["ingest", "--events", str(poor), "--out", str(data), "--config", str(lenient)]
    )
    assert result.exit_code == 0, result.output
    assert state(data)[0] == ["c1"]


@pytest.mark.parametrize("step", STEPS)
def test_a_run_killed_between_its_steps_leaves_one_consistent_version_and_the_next_run_cleans_up(
    tmp_path: Path, inputs: tuple[Path, Path], step: str
) -> None:
    old, new = inputs
    if step in MIGRATION_STEPS:
        data = flat_directory(tmp_path, old)
    else:
        data = tmp_path / "data"
        ingest_files(data, events=old)

    killed = run_cli("--events", new, "--out", data, env={"CLM_INGEST_FAULT": step})

    assert killed.returncode == -9, killed.stderr  # SIGKILL at the step, not an error
    # the old run's events with the old run's rejects, or (killed after the switch) the new run's with its own
    assert state(data) == (NEW_STATE if step == "pointed" else OLD_STATE)

    again = " ".join(ingest_files(data, events=new).notes)

    assert state(data) == NEW_STATE
    assert leftovers(data) == []
    if step in ("staged", "migrate-staged"):
        assert "left by an interrupted run" in again
    if step in ("renamed", "migrate-renamed"):
        assert "never made current by an interrupted run" in again
    if step == "migrate-pointed":
        assert "moved into version" in again


def test_an_unknown_fault_step_is_a_usage_error(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    _, new = inputs

    result = CliRunner().invoke(
        app,
        ["ingest", "--events", str(new), "--out", str(tmp_path / "data")],
        env={"CLM_INGEST_FAULT": "stagd"},
    )

    assert result.exit_code == 2
    assert "CLM_INGEST_FAULT='stagd' is not a step" in result.stderr
    assert not (tmp_path / "data").exists()


def test_staging_left_beside_the_directory_by_earlier_ingests_is_removed(
    tmp_path: Path, inputs: tuple[Path, Path]
) -> None:
    _, new = inputs
    stale = tmp_path / ".data.0123456789ab.partial"
    stale.mkdir()
    write(stale / "events.parquet", "half written")

    run = ingest_files(tmp_path / "data", events=new)

    assert not stale.exists()
    assert run.notes == ["removed .data.0123456789ab.partial, left by an interrupted ingest"]


def test_a_flat_directory_reads_as_it_is_and_is_migrated_by_the_first_run(
    tmp_path: Path, inputs: tuple[Path, Path]
) -> None:
    old, new = inputs
    data = flat_directory(tmp_path, old)

    assert resolve_data_dir(data) == data
    inputs_before = load_inputs(connect(), data)
    assert inputs_before.data_end == dt.date(2024, 1, 6)

    run = ingest_files(data, events=new)

    assert len(run.notes) == 1 and run.notes[0].startswith(f"migrated {data} to versioned layout")
    assert state(data) == NEW_STATE
    previous = data / VERSIONS_DIR / run.publication.previous
    assert sorted(pd.read_parquet(previous / "events.parquet")["user_id"]) == OLD_STATE[0]
    assert sorted(path.name for path in data.iterdir()) == [POINTER_FILE, VERSIONS_DIR]


def test_the_current_and_the_previous_version_are_kept(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    old, new = inputs
    data = tmp_path / "data"
    first = ingest_files(data, events=old).publication.version
    second = ingest_files(data, events=new).publication.version
    third = ingest_files(data, events=old).publication.version

    assert sorted(path.name for path in (data / VERSIONS_DIR).iterdir()) == sorted([second, third])
    assert first not in {second, third}
    assert current_version(data) == third


def test_a_second_writer_is_refused_while_the_first_holds_the_directory(
    tmp_path: Path, inputs: tuple[Path, Path]
) -> None:
    old, new = inputs
    data = tmp_path / "data"
    ingest_files(data, events=old)

    with DataDirectoryWriter(data):
        result = run_cli("--events", new, "--out", data)

    assert result.returncode == 2
    assert "another run is writing this data directory" in result.stderr
    assert state(data) == OLD_STATE
    with DataDirectoryWriter(data), pytest.raises(DataDirectoryBusy):
        DataDirectoryWriter(data).__enter__()


def test_a_pointer_to_a_missing_version_is_a_clear_error(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    old, _ = inputs
    data = tmp_path / "data"
    ingest_files(data, events=old)
    shutil.rmtree(resolve_data_dir(data))

    with pytest.raises(DataDirectoryError, match=r"current.json names version 'v.*', which .* does not hold"):
        load_inputs(connect(), data)
