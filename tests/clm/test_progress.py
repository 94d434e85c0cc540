"""Progress of the long commands off a terminal: a line per step with the elapsed time, and none of MLflow's
chatter (download bars, INFO lines, the pip-version warning, registration messages) — what a log file of
`clm train`, `clm score` or `clm ingest` shows."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from clm.progress import status_steps, step_line, step_lines
from tests.conftest import ServedWorld

STEP = re.compile(r"^\[\s*(\d+\.\d) s\] (.+)$")
# what MLflow prints unless told otherwise, and what it printed into `clm train`'s log before
MLFLOW_NOISE = ("Downloading artifacts", "pip", "Successfully registered", "Created version", "CloudPickle",
                "INFO mlflow", "uv project")  # fmt: skip


def steps_of(text: str) -> list[tuple[float, str]]:
    return [(float(m.group(1)), m.group(2)) for line in text.splitlines() if (m := STEP.match(line))]


def test_step_lines_print_each_step_with_the_time_since_the_start() -> None:
    out = io.StringIO()
    console = Console(file=out, width=40)  # narrow: a step line is never wrapped
    with step_lines(console, "building features") as step:
        step("fold 1/3 — train 2025-04-01..2025-08-01 (5), valid 2025-09-01, test 2025-10-01")
    steps = steps_of(out.getvalue())
    assert [message for _, message in steps] == [
        "building features",
        "fold 1/3 — train 2025-04-01..2025-08-01 (5), valid 2025-09-01, test 2025-10-01",
        "done",
    ]
    assert steps[0][0] == 0.0 and [t for t, _ in steps] == sorted(t for t, _ in steps)
    assert step_line(71.94, "done") == "[  71.9 s] done"


def test_an_error_ends_the_steps_without_done() -> None:
    out = io.StringIO()
    with pytest.raises(ValueError), step_lines(Console(file=out), "ingesting") as step:
        step("reading events")
        raise ValueError("bad file")
    assert [message for _, message in steps_of(out.getvalue())] == ["ingesting", "reading events"]


def test_on_a_terminal_the_steps_are_a_live_status_not_lines() -> None:
    out = io.StringIO()
    with status_steps(Console(file=out, force_terminal=True), "ingesting") as step:
        step("reading events")
    assert steps_of(out.getvalue()) == []
    with status_steps(Console(file=(plain := io.StringIO())), "ingesting") as step:
        step("reading events")
    assert [message for _, message in steps_of(plain.getvalue())] == ["ingesting", "reading events", "done"]


def run_logged(args: list[str], log: Path, env: dict[str, str], cwd: Path) -> str:
    """Run `clm ARGS` with stdout and stderr sent to a file, as a scheduler or `> log 2>&1` would."""
    with log.open("w") as out:
        completed = subprocess.run([sys.executable, "-m", "clm.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                   env=env, cwd=cwd, timeout=900)  # fmt: skip
    text = log.read_text()
    assert completed.returncode == 0, text
    return text


@pytest.mark.slow
def test_train_score_and_ingest_print_timed_steps_and_no_mlflow_noise_into_a_log_file(
    private_served_world: ServedWorld, tmp_path: Path
) -> None:
    world = private_served_world
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = world.tracking_uri
    data_end = pd.read_parquet(world.data / "events.parquet", columns=["ts"])["ts"].max().date()

    # churn has a champion here: training refits its recipe (a download) and logs and registers a version
    train = run_logged(["train", "--data", str(world.data), "--model", "churn", "--truth", str(world.data / "truth")],
                       tmp_path / "train.log", env, tmp_path)  # fmt: skip
    score = run_logged(["score", "--data", str(world.data), "--as-of", str(data_end + dt.timedelta(days=1)),
                        "--out", str(tmp_path / "scores.csv")], tmp_path / "score.log", env, tmp_path)  # fmt: skip
    ingest = run_logged(["ingest", "--events", str(world.data / "events.parquet"), "--users",
                         str(world.data / "users.parquet"), "--out", str(tmp_path / "ingested")],
                        tmp_path / "ingest.log", env, tmp_path)  # fmt: skip

    for name, text, expected in (
        (
            "train",
            train,
            ("training", "churn: fold 1/", "churn: refitting champion", "churn: logging to MLflow"),
        ),
        ("score", score, ("loading the @champion models", "building every user's features", "deciding for")),
        ("ingest", ingest, ("ingesting into", "reading events", "validating", "writing")),
    ):
        steps = steps_of(text)
        messages = [message for _, message in steps]
        for start in expected:
            assert any(message.startswith(start) for message in messages), (name, start, text)
        assert messages[-1] == "done", (name, text)
        assert [t for t, _ in steps] == sorted(t for t, _ in steps), (name, text)
        for noise in MLFLOW_NOISE:
            assert noise not in text, (name, noise, text)
