"""`clm lift`: a logged campaign with its outcomes, read back as JSON and as a table; a missing log is an
error naming it."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
from typer.testing import CliRunner

from clm.cli import app
from clm.commands.lift import log_campaign
from serving.decision_log import DecisionLog

runner = CliRunner()
SENT = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def test_lift_of_a_logged_campaign(tmp_path) -> None:
    # 40 users meant for the discount: 20 received it (4 churned), 20 in the control group (10 churned)
    n = 40
    table = pd.DataFrame({
        "user_id": [f"u{i}" for i in range(n)], "stage": "at_risk", "intended_action": "discount",
        "action": ["discount"] * 20 + ["no_action"] * 20, "control_group": [False] * 20 + [True] * 20,
        "holdout": [None] * 20 + ["control_group"] * 20, "cost": [1.0] * 20 + [0.0] * 20,
        "propensity": [0.95] * 20 + [0.05] * 20, "explored": False, "expected_value": 2.0,
    })  # fmt: skip
    url = f"sqlite:///{tmp_path / 'campaign.db'}"
    log = DecisionLog(url)
    log_campaign(log, table, ts=SENT, versions={"policy": "clm-policy/1"})
    ids = {d["user_id"]: d["decision_id"] for d in log.read_decisions()}
    churned = [f"u{i}" for i in range(4)] + [f"u{i}" for i in range(20, 30)]
    for user in churned:
        log.record_outcome(ids[user], "churned", "x", SENT + dt.timedelta(days=10))
    log.record_outcome(ids["u0"], "margin", "x", SENT + dt.timedelta(days=10), value=30.0)
    log.close()

    result = runner.invoke(app, ["lift", "--log", url, "--as-of", "2026-03-01", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["users"], summary["control_group"]) == (40, 20)
    rows = {(c["action"], c["stage"]): c for c in summary["comparisons"]}
    discount = rows[("discount", "at_risk")]
    assert (discount["n_treated"], discount["n_control"], discount["enough"]) == (
        20,
        20,
        False,
    )  # min_users 30
    assert (
        discount["churn_lift"] == 4 / 20 - 10 / 20
        and discount["churn_low"] < -0.3 < discount["churn_high"] < 0
    )
    assert discount["margin_incremental"] == 30.0 / 20 - 1.0
    assert rows[("policy", "all")]["n_control"] == 20

    table_out = runner.invoke(app, ["lift", "--log", url, "--as-of", "2026-03-01"])
    assert table_out.exit_code == 0 and "discount" in table_out.output and "20 / 20" in table_out.output
    early = runner.invoke(app, ["lift", "--log", url, "--as-of", "2026-01-20"])  # the 30-day horizon is open
    assert early.exit_code == 0 and "nothing to measure yet" in early.output


def test_a_missing_log_is_named(tmp_path) -> None:
    result = runner.invoke(app, ["lift", "--log", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 2 and "no decision log at" in result.output
