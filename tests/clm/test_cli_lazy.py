"""`clm --help` and `clm COMMAND --help` must not import the heavy packages: they cost 15 s of CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("mlflow", "sklearn", "lightgbm", "pandas", "numpy", "ibis", "pyarrow", "training", "simulation")

PROBE = """
import sys
from clm.cli import app
try:
    app(sys.argv[1:], prog_name="clm")
except SystemExit:
    pass
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def heavy_imports_of(*args: str) -> list[str]:
    script = PROBE.format(heavy=HEAVY)
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True, timeout=120
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("HEAVY="))
    assert "Usage: clm" in result.stdout
    return [name for name in line.removeprefix("HEAVY=").split(",") if name]


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("train", "--help"),
        ("evaluate", "--help"),
        ("promote", "--help"),
        ("simulate", "--help"),
        ("ingest", "--help"),
        ("serve", "--help"),
        ("features", "--help"),
        ("features", "build", "--help"),
        ("features", "materialize", "--help"),
    ],
)
def test_help_imports_no_heavy_package(args: tuple[str, ...]) -> None:
    assert heavy_imports_of(*args) == []


def test_top_level_help_lists_every_command_without_importing_it() -> None:
    from clm.cli import COMMANDS

    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=("clm.commands",)), "--help"],
        capture_output=True, text=True, check=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    for name, spec in COMMANDS.items():
        assert name in result.stdout and spec.help in result.stdout
    assert "HEAVY=\n" in result.stdout or result.stdout.rstrip().endswith("HEAVY=")
