"""`clm monitor` on the trained world: the summary with its WARNING lines, JSON, and the errors a user can make."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from clm.cli import app

runner = CliRunner()


@pytest.fixture
def world(served_env):
    """The trained world with a fresh, empty decision log (CLM_DECISION_LOG)."""
    return served_env


def test_monitor_prints_the_comparison_and_every_breach_as_a_warning(world) -> None:
    text = runner.invoke(app, ["monitor", "--data", str(world.data)])
    assert text.exit_code == 0, text.output + repr(text.exception)
    assert "reference: training cutoffs of clm-churn/" in text.stdout and "current:   snapshot" in text.stdout
    report = runner.invoke(app, ["monitor", "--data", str(world.data), "--json"])
    data = json.loads(report.stdout)
    assert data["lift_note"] == "no logged decision has an outcome (retained / churned) yet"  # the empty log
    unread = runner.invoke(app, ["monitor", "--data", str(world.data), "--json", "--decision-log", "none"])
    assert json.loads(unread.stdout)["lift_note"] == "no decision log read"
    assert {"features", "scores", "stages", "actions", "value_by_stage", "breaches"} <= set(data)
    warnings = [line for line in text.stderr.splitlines() if line.startswith("WARNING drift breach — ")]
    assert [w.removeprefix("WARNING drift breach — ") for w in warnings] == data["breaches"]
    flagged = {f["feature"] for f in data["features"] if f["breach"]}
    assert flagged == {
        b.split(":")[0].removeprefix("feature ") for b in data["breaches"] if b.startswith("feature")
    }


def test_monitor_refuses_a_date_after_the_data_and_a_bad_date(world) -> None:
    late = runner.invoke(app, ["monitor", "--data", str(world.data), "--as-of", "2030-01-01"])
    assert late.exit_code == 2 and "after the end of the data" in late.stderr
    bad = runner.invoke(app, ["monitor", "--data", str(world.data), "--as-of", "yesterday"])
    assert bad.exit_code == 2 and "is not a date" in bad.output
    assert bad.exception is None or isinstance(bad.exception, SystemExit)
