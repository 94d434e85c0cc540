"""Progress of the long commands, on a terminal and in a log file alike, and the third-party noise kept out.

On a terminal a command shows a live status (a spinner or a bar, redrawn in place). Off a terminal — output
sent to a file, a pipe, a CI log — a live display prints nothing, so there every step is one line on stderr
with the time since the command started:

    [   0.0 s] building features and labels at 9 cutoffs (2025-04-01..2025-12-01)
    [  14.2 s] churn: 21,817 rows of the alive population
    ...
    [  71.9 s] done
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

Step = Callable[[str], None]


def step_line(elapsed_seconds: float, message: str) -> str:
    """One step as a log line: `[  12.3 s] message`."""
    return f"[{elapsed_seconds:6.1f} s] {message}"


@contextmanager
def step_lines(console: Console, first: str) -> Iterator[Step]:
    """A line per step on `console`, with the elapsed time; `first` is printed at once and `done` at the end
    (not after an error: the error says what happened)."""
    started = time.perf_counter()

    def step(message: str) -> None:
        console.print(
            step_line(time.perf_counter() - started, message), markup=False, highlight=False, soft_wrap=True
        )

    step(first)
    yield step
    step("done")


@contextmanager
def status_steps(console: Console, first: str) -> Iterator[Step]:
    """A spinner showing the current step on a terminal, else a line per step (`step_lines`)."""
    if console.is_terminal:
        with console.status(first) as status:
            yield status.update
    else:
        with step_lines(console, first) as step:
            yield step


def quiet_third_party() -> None:
    """Keep MLflow's chatter out of a command's output (call it at the entry point, before the work starts).

    MLflow's INFO lines (uv project detected, input example validated) go below the command's log level,
    its artifact download bars are switched off (on a terminal they fight the command's own display; in a log
    file they are a wall of carriage returns), and its warning that pip's version cannot be resolved — a uv
    environment has no pip; the models' requirements are pinned explicitly — is dropped. MLflow's own
    warnings and errors still show.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # read when mlflow is first imported; the setLevel below covers an mlflow imported already
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
