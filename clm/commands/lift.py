"""`clm lift`: the measured lift of what the service decided — treated against the global control group and
each action against its holdouts — from the decision log and the outcomes recorded against it."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Annotated, Any

import typer

from clm.commands.features import date_option

PERCENT_MEASURES = ("churn", "return", "upgrade")


def lift(
    log: Annotated[
        str | None,
        typer.Option(
            "--log", help="The decision log: sqlite:///PATH or postgresql://… (default CLM_DECISION_LOG)."
        ),
    ] = None,
    schema: Annotated[
        str | None, typer.Option("--schema", help="PostgreSQL schema of the decision log.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Count decisions whose [lift] horizon closed by this date (default: now)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of the table.")] = False,
) -> None:
    """Per action and stage: treated against control outcome rates (churn, return, upgrade) with 95 % intervals
    and the users behind each, the incremental margin, and the policy as a whole against the control group."""
    from pathlib import Path

    from clm.config import load_config
    from serving.decision_log import DecisionLog, DecisionLogError
    from serving.lift import logged_lift, logged_rows
    from serving.settings import ServingSettings

    settings = ServingSettings()
    config = load_config(settings.config)
    url = log or settings.decision_log_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        typer.echo(f"clm lift: no decision log at {url}", err=True)
        raise typer.Exit(2)
    day = date_option(as_of, "--as-of")
    when = dt.datetime.now(dt.UTC) if day is None else dt.datetime.combine(day, dt.time.min, dt.UTC)
    try:
        decision_log = DecisionLog(url, schema=schema or settings.decision_log_schema)
    except (DecisionLogError, ValueError) as exc:
        typer.echo(f"clm lift: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        rows = logged_rows(decision_log, config.lift, when)
        table = logged_lift(decision_log, config.lift, when)
    finally:
        decision_log.close()
    summary = {
        "log": decision_log.url, "as_of": when.isoformat(), "horizon_days": config.lift.horizon_days,
        "confidence": config.lift.confidence, "users": len(rows),
        "control_group": int(rows["control_group"].sum()) if len(rows) else 0,
        "comparisons": [{k: _plain(v) for k, v in record.items()} for record in table.to_dict("records")],
    }  # fmt: skip
    if as_json:
        typer.echo(json.dumps(summary))
        return
    if not len(rows):
        typer.echo(f"no decision in {decision_log.url} has a closed {config.lift.horizon_days}-day horizon by "
                   f"{when.date()}: nothing to measure yet")  # fmt: skip
        return
    print_lift(table, title=f"measured lift from {decision_log.url}: {len(rows):,} users "
               f"({summary['control_group']:,} in the control group) whose {config.lift.horizon_days}-day "
               f"horizon closed by {when.date()}")  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _points(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{100 * value:+.1f}"


def lift_rows(table: Any) -> list[list[str]]:
    """The table as text cells: comparison, stage, users treated / control, per measure the rates and the
    difference in points with its interval, the incremental margin with its interval."""
    out = []
    for r in table.to_dict("records"):
        cells = [
            r["action"],
            r["stage"],
            f"{r['n_treated']:,} / {r['n_control']:,}" + ("" if r["enough"] else " (few)"),
        ]
        for measure in PERCENT_MEASURES:
            if math.isfinite(r[f"{measure}_lift"]):
                cells.append(f"{100 * r[f'{measure}_treated']:.1f}% vs {100 * r[f'{measure}_control']:.1f}%: "
                             f"{_points(r[f'{measure}_lift'])} [{_points(r[f'{measure}_low'])}, {_points(r[f'{measure}_high'])}]")  # fmt: skip
            else:
                cells.append("—")
        margin = r["margin_incremental"]
        cells.append("—" if not math.isfinite(margin) else
                     f"{margin:+.2f} [{r['margin_low']:+.2f}, {r['margin_high']:+.2f}]")  # fmt: skip
        out.append(cells)
    return out


def print_lift(table: Any, *, title: str, console: Any = None, stages: bool = True) -> None:
    """The lift table for a person (rich). `stages=False`: the all-stages rows only."""
    from rich.console import Console
    from rich.table import Table

    shown = table if stages else table[table["stage"] == "all"]
    out = Table(title=title)
    for column in ("comparison", "stage", "users treated / control", "churn (points, 95 % CI)",
                   "return", "upgrade", "incremental margin per user"):  # fmt: skip
        out.add_column(column)
    for cells in lift_rows(shown):
        out.add_row(*cells)
    (console or Console()).print(out)


def log_campaign(log: Any, table: Any, *, ts: dt.datetime, versions: dict) -> int:
    """Append a batch decision table (`DecisionModels.decide(...).table`: user_id, stage, action, propensity,
    explored, intended_action, control_group, holdout, cost, expected_value) to a decision log as one campaign
    at `ts`; the payload keeps the action block lift and campaign history read. Returns the decisions written."""
    import uuid

    from serving.decision_log import DecisionRecord

    for r in table.to_dict("records"):
        action = {k: _plain(r[k]) for k in ("intended_action", "control_group", "holdout", "cost", "propensity",
                                            "explored")}  # fmt: skip
        action["name"] = r["action"]
        log.append(DecisionRecord(
            decision_id=uuid.uuid4().hex, ts=ts, user_id=str(r["user_id"]), request_digest="batch",
            versions=versions, stage=str(r["stage"]), action=str(r["action"]), propensity=float(r["propensity"]),
            explored=bool(r["explored"]), expected_value=float(r["expected_value"]), candidates=[],
            latency_ms=0.0, payload={"user_id": str(r["user_id"]), "action": action}, inputs={},
        ))  # fmt: skip
    log.flush(timeout=60.0)
    return len(table)


def demo_step(console: Any, config: Any, data: Any, out: Any, step: str = "8b") -> None:
    """The demo's measured lift: every user decided at the latest wave with true effects (exploration and the
    control group on, as the API decides), logged as a campaign into OUT/campaign.db, each user's outcomes
    drawn from the simulator's true probabilities given what they received and recorded against the
    decision; then the lift read back from the log, the policy against the global control group first, and
    how many action × stage intervals hold the true effect."""
    import pandas as pd

    from clm.commands.features import contact_params, feature_params
    from clm.commands.policy import simulated_truth
    from features.jobs import latest_features
    from models.decision import load_decision_models
    from models.lift import coverage
    from serving.decision_log import DecisionLog
    from serving.lift import logged_lift
    from training.lift import simulated_outcomes

    truth = simulated_truth(data)
    if truth is None:
        return
    day = max(pd.read_parquet(truth / "effects.parquet", columns=["cutoff"])["cutoff"])
    with console.status("deciding, logging and measuring a campaign"):
        models = load_decision_models(config)
        frame, _ = latest_features(data, params=feature_params(config), as_of=day,
                                   contacts=contact_params(config, models))  # fmt: skip
        table = models.decide(frame, explore=True).table
        table, true = simulated_outcomes(table, truth, day, models.policy.actions, seed=0)
        path = out / "campaign.db"
        path.unlink(missing_ok=True)
        log = DecisionLog(f"sqlite:///{path}")
        log.start()
        try:
            sent = dt.datetime.combine(day, dt.time.min, dt.UTC)
            log_campaign(log, table, ts=sent, versions=models.version_labels())
            ids = {d["user_id"]: d["decision_id"] for d in log.read_decisions()}
            after = sent + dt.timedelta(days=config.lift.horizon_days)
            for r in table.to_dict("records"):
                did = ids[str(r["user_id"])]
                for name, column in (("churned", "churned"), ("upgraded", "upgraded")):
                    if r[column] == 1.0:
                        log.record_outcome(did, name, str(r["action"]), after)
                if r["stage"] == "dormant" and r["churned"] == 0.0:  # a lapsed user who did not stay away
                    log.record_outcome(did, "returned", str(r["action"]), after)
                if math.isfinite(r["margin"]):
                    log.record_outcome(did, "margin", str(r["action"]), after, value=float(r["margin"]))
            lift_table = logged_lift(log, config.lift, dt.datetime.now(dt.UTC))
        finally:
            log.close()
    control = int(table["control_group"].sum())
    print_lift(lift_table, stages=False, console=console,
               title=f"{step}. measured lift of the campaign logged at {day} ({len(table):,} users, {control:,} in "
               f"the global control group; outcomes drawn from the simulator's truth) — `clm lift --log "
               f"sqlite:///{path}`")  # fmt: skip
    policy = lift_table[(lift_table["scope"] == "policy") & (lift_table["stage"] == "all")].iloc[0]
    console.print(
        f"   the policy against the global control group: churn {_points(policy['churn_lift'])} points "
        f"[{_points(policy['churn_low'])}, {_points(policy['churn_high'])}], incremental margin "
        f"{policy['margin_incremental']:+.2f} [{policy['margin_low']:+.2f}, {policy['margin_high']:+.2f}] per user"
    )
    covered, cells = coverage(lift_table, true)
    console.print(f"   {covered} of {cells} action × stage intervals with ≥ {config.lift.min_users} users a side "
                  "hold the true average effect on churn")  # fmt: skip
