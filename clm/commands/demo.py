"""`clm demo`: the main job end to end on a small simulated world, with a printed summary."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from clm.commands.features import contact_params, feature_params, label_params
from clm.commands.ingest import ingest_options
from clm.config import load_config
from clm.config_schema import ClmConfig
from clm.progress import quiet_third_party
from clm.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
# where `make demo` (and `clm demo` by default) builds the demo world, relative to the project root; the
# canonical data directory is DEMO_OUT / "data", the one the committed notebooks are executed on
DEMO_OUT = Path("data/demo")


def _stage_table(outcomes: pd.DataFrame) -> Table:
    from simulation.params import LATENT_TO_PRODUCT_STAGE, STAGES

    closed = outcomes[outcomes["churned"].notna()]
    last = closed[closed["cutoff"] == closed["cutoff"].max()]
    summary = last.groupby("latent_stage").agg(
        users=("user_id", "size"), p_churn=("p_churn", "mean"), churned=("churned", "mean")
    )
    table = Table(title=f"Latent lifecycle stages at {last['cutoff'].max()} (truth, 30-day horizon)")
    for column in ("latent stage", "product stage", "users", "share", "true P(churn)", "realised churn"):
        table.add_column(column, justify="left" if "stage" in column else "right")
    total = int(summary["users"].sum())
    for stage in STAGES:
        if stage not in summary.index:
            continue
        row = summary.loc[stage]
        table.add_row(
            stage,
            LATENT_TO_PRODUCT_STAGE[stage],
            f"{int(row['users']):,}",
            f"{row['users'] / total:.1%}",
            f"{row['p_churn']:.1%}",
            f"{float(row['churned']):.1%}",
        )
    return table


def demo(
    out: Annotated[Path, typer.Option("--out", help="Working directory for the demo's data.")] = DEMO_OUT,
    users: Annotated[int, typer.Option("--users", min=100, help="Simulated users.")] = 5000,
    days: Annotated[int, typer.Option("--days", min=90, help="Simulated days.")] = 365,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Simulate a small world, ingest it, and print the counts and a stage/churn summary from the truth."""
    import pandas as pd

    from clm.commands.simulate import value_truth
    from features.datadir import resolve_data_dir
    from features.ingest import InputError, ingest_files
    from simulation.calibration import TARGETS, measure
    from simulation.io import simulate_to_directory
    from simulation.truth import MarginParams

    logging.basicConfig(level=logging.WARNING)
    quiet_third_party()  # MLflow's INFO lines, download bars and pip warning would bury the summary
    settings = Settings()
    config = load_config(settings.config)
    console = Console()
    raw, data = out / "raw", out / "data"

    with console.status(f"simulating {users:,} users over {days} days"):
        simulate_to_directory(raw, n_users=users, days=days, seed=seed, start=dt.date(2025, 1, 1),
                              value_truth=value_truth(config, MarginParams))  # fmt: skip
    console.print(f"[bold]1. simulate[/bold]  wrote {raw}")

    try:
        with console.status("ingesting"):
            counts = ingest_files(
                data,
                events=raw / "events.parquet",
                users=raw / "users.parquet",
                subscriptions=raw / "subscriptions.parquet",
                campaigns=raw / "campaigns.parquet",
                options=ingest_options(config.ingest, settings, None),
            ).counts
    except InputError as exc:
        console.print(f"[red]ingest failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    table = Table(title=f"2. ingest -> {data}")
    for column in ("input", "read", "accepted", "rejected", "duplicates"):
        table.add_column(column, justify="left" if column == "input" else "right")
    for name, c in counts.items():
        table.add_row(name, f"{c.read:,}", f"{c.accepted:,}", f"{c.rejected:,}", f"{c.duplicates:,}")
    console.print(table)

    outcomes = pd.read_parquet(raw / "truth" / "outcomes.parquet")
    console.print(_stage_table(outcomes))
    calibration = measure(
        outcomes,
        pd.read_parquet(raw / "truth" / "effects.parquet"),
        pd.read_parquet(resolve_data_dir(data) / "campaigns.parquet"),
    )
    figures = Table(title="the simulated world against its calibration targets")
    for column in ("measure", "value", "target"):
        figures.add_column(column, justify="left" if column == "measure" else "right")
    values = calibration.as_dict()
    for name, (low, high) in TARGETS.items():
        ok = low <= values[name] <= high
        figures.add_row(name, f"[{'green' if ok else 'red'}]{values[name]:.3f}[/]", f"{low:.2f}–{high:.2f}")
    console.print(figures)

    _features_and_store(console, config, data, out, days)
    _train_and_promote(console, config, data, raw / "truth")
    _policy(console, config, data, raw / "truth")
    from clm.commands.lift import demo_step as lift_step

    lift_step(console, config, data, out)  # logs OUT/campaign.db, whose lift the report shows
    report = _report(console, config, data, out)
    _drift(console, config, data)
    urls = _serve(console, out)
    if urls:
        console.print(
            f"[bold]reviewer pages[/bold] — start the server with `make review`, open a page and sign in with "
            f"the review key [bold]{urls['review_key']}[/bold]:"
        )
        for name in ("overview", "user", "replay"):
            if name in urls:
                console.print(f"   {name:9s} {urls[name]}")
    if report is not None:
        console.print(
            f"[bold]campaign report[/bold] (opens in a browser, no server needed): {report.resolve()}"
        )


def _report(console: Console, config: ClmConfig, data: Path, out: Path) -> Path | None:
    """`clm report` as of the latest campaign wave the simulator has true effects for (so the report carries
    the policy-evaluation table), into OUT/report.html."""
    import time

    import pandas as pd

    from clm.commands.policy import simulated_truth
    from clm.commands.report import write_report

    truth = simulated_truth(data)
    if truth is None:
        return None
    day = max(pd.read_parquet(truth / "effects.parquet", columns=["cutoff"])["cutoff"])
    path = out / "report.html"
    started = time.perf_counter()
    with console.status("writing the campaign report") as status:
        size, summary = write_report(data, day, path, config=config, status=status.update,
                                     lift_log=f"sqlite:///{(out / 'campaign.db').resolve()}")  # fmt: skip
    console.print(f"[bold]9. campaign report[/bold] as of {day}: {path} ({size / 1e6:.1f} MB, "
                  f"{time.perf_counter() - started:.0f} s) — {summary}")  # fmt: skip
    return path


def _drift(console: Console, config: ClmConfig, data: Path, shown: int = 6) -> None:
    """`clm monitor` in short: the data's end against the champion's training cutoffs, with the breaches."""
    from clm.commands.monitor import run_monitor

    with console.status("drift against the training snapshot"):
        result = run_monitor(data, config)
    lines = result.summary_lines()
    warnings = [line for line in lines if line.startswith("WARNING")]
    console.print(
        "[bold]drift[/bold] (clm monitor): the latest snapshot against the champion's training cutoffs"
    )
    for line in lines[: len(lines) - len(warnings)]:
        console.print(f"   {line}", markup=False, highlight=False)
    for line in warnings[:shown]:
        console.print(f"   [yellow]{line}[/yellow]", highlight=False)
    if len(warnings) > shown:
        console.print(f"   … {len(warnings) - shown} more breaches: `clm monitor --data {data}`")


def _features_and_store(console: Console, config: ClmConfig, data: Path, out: Path, days: int) -> None:
    """Build point-in-time features and labels at monthly cutoffs, then fill the online store."""
    import pandas as pd

    from features.cutoffs import parse_cutoffs
    from features.jobs import build_feature_tables, materialize_latest
    from features.online import open_store
    from features.registry import build_registry

    start = dt.date(2025, 1, 1)
    last = start + dt.timedelta(days=days - 1)
    cutoffs = parse_cutoffs(f"monthly:2025-02-01..{last.replace(day=1).isoformat()}")
    params, labels = feature_params(config), label_params(config)
    with console.status(f"building features at {len(cutoffs)} monthly cutoffs"):
        summary = build_feature_tables(data, cutoffs, out / "features", params=params, label_params=labels)
    frame = pd.read_parquet(summary.labels_path)
    rates = frame.groupby("cutoff").agg(
        rows=("user_id", "size"), churn=("churn", "mean"), upgrade=("upgrade", "mean")
    )
    table = Table(
        title=f"3. features -> {summary.features_path} ({len(build_registry(params))} features, {summary.feature_version})"
    )
    for column in ("cutoff", "users", "churn label", "upgrade label"):
        table.add_column(column, justify="left" if column == "cutoff" else "right")
    for cutoff, row in rates.tail(4).iterrows():
        churn = "unknown" if pd.isna(row["churn"]) else f"{row['churn']:.1%}"
        upgrade = "unknown" if pd.isna(row["upgrade"]) else f"{row['upgrade']:.1%}"
        table.add_row(str(cutoff), f"{int(row['rows']):,}", churn, upgrade)
    console.print(table)

    url = f"sqlite:///{(out / 'online.db').resolve()}"
    with console.status("materializing the latest vectors"):
        info, latest = materialize_latest(data, url, params=params, contacts=contact_params(config))
        as_of = info.as_of
        with open_store(url) as store:
            sample = store.read(str(latest["user_id"].iloc[0]))
    console.print(f"[bold]4. online store[/bold]  {info.n_users:,} users as of {as_of} in {url}")
    if sample is not None:
        shown = {
            k: sample.values[k]
            for k in ("days_since_last_event", "active_days_30d", "current_plan", "rfm_segment")
        }
        console.print(f"   e.g. {sample.user_id}: {shown}")


def _train_and_promote(console: Console, config: ClmConfig, data: Path, truth: Path) -> None:
    """Train the churn, upgrade and reactivation models into the project's MLflow store, then promote each
    challenger."""
    from training import tracking
    from training.promote import promote_model
    from training.train import train

    with console.status("training churn, upgrade and reactivation models") as status:
        results = train(data, ["churn", "upgrade", "reactivation"], config=config, project_root=Path.cwd(),
                        truth_dir=truth, progress=lambda message: status.update(message))  # fmt: skip
    table = Table(title=f"5. models -> MLflow {tracking.resolve_tracking_uri(Path.cwd())}")
    for column in (
        "model",
        "v",
        "AUC",
        "logistic",
        "recency",
        "BG/NBD",
        "oracle",
        "÷ oracle",
        "ECE raw → cal",
        "registry",
    ):
        table.add_column(column, justify="left" if column in ("model", "promotion") else "right")
    for r in results:
        decision = promote_model(
            r.registered_name, metric=config.training.promotion_metric,
            tolerance=config.training.promotion_tolerance,
        )  # fmt: skip
        m = r.test_metrics
        oracle = m.get("oracle", {}).get("roc_auc", float("nan"))
        table.add_row(
            r.registered_name, r.version, f"{m['model']['roc_auc']:.3f}", f"{m['logistic']['roc_auc']:.3f}",
            f"{m['recency_rule']['roc_auc']:.3f}",
            f"{m['bgnbd']['roc_auc']:.3f}" if "bgnbd" in m else "—", f"{oracle:.3f}",
            f"{m['model'].get('auc_over_oracle_auc', float('nan')):.3f}",
            f"{m['model']['ece_before_calibration']:.3f} → {m['model']['ece']:.3f}",
            "@champion" if decision.promote else "@challenger (not promoted)",
        )  # fmt: skip
    console.print(table)
    console.print(
        "   browse the runs: .venv/bin/mlflow ui --backend-store-uri "
        + tracking.resolve_tracking_uri(Path.cwd())
    )


def _policy(console: Console, config: ClmConfig, data: Path, truth: Path) -> None:
    """Fit and promote the next-best-action policy, evaluate it against the baselines and the oracle, and
    show a few decisions."""
    from clm.commands.policy import evaluation_tables, latent_to_product_stage, print_trained_policy
    from features.jobs import latest_features
    from models.decision import load_decision_models, version_label
    from training.evaluate_policy import evaluate_policy, evaluation_findings
    from training.policy import train_policy
    from training.promote import promote_model

    with console.status("fitting the uplift models and the policy") as status:
        trained = train_policy(data, config=config, project_root=Path.cwd(), truth_dir=truth,
                               progress=lambda message: status.update(message))  # fmt: skip
        rules = config.models.policy
        decision = promote_model(
            trained.registered_name,
            metric=rules.promotion_metric,
            tolerance=rules.promotion_tolerance,
            minimum=rules.promotion_minimum,
        )
    console.print("[bold]6. policy[/bold]")
    print_trained_policy(console, trained)
    console.print(
        f"   {version_label(trained.registered_name, trained.version)}: "
        + (
            "promoted to @champion"
            if decision.promote
            else "kept as @challenger: " + "; ".join(decision.reasons)
        )
    )
    with console.status("evaluating the policy against the baselines") as status:
        evaluation = evaluate_policy(data, config=config, project_root=Path.cwd(), truth_dir=truth,
                                     latent_to_stage=latent_to_product_stage(),
                                     progress=lambda message: status.update(message))  # fmt: skip
    console.print("[bold]7. policy evaluation[/bold]")
    for table in evaluation_tables(evaluation):
        console.print(table)
    for line in evaluation_findings(evaluation):
        console.print("   " + line)

    models = load_decision_models(config)
    frame, as_of = latest_features(
        data, params=feature_params(config), contacts=contact_params(config, models)
    )
    batch = models.decide(frame).table
    table = Table(title=f"8. a few decisions as of {as_of} ({models.described(models.policy)})")
    currency = config.value.currency
    money = (f"value if retained ({currency})", f"expected value ({currency})")
    for column in ("user", "stage", "scored by", "P(churn)", "P(upgrade)", money[0], "action", "Δp(stay/return)",
                   money[1], "why the stage"):  # fmt: skip
        table.add_column(
            column,
            justify="right" if column in ("P(churn)", "P(upgrade)", *money, "Δp(stay/return)") else "left",
        )
    shown = []
    for stage in ("new", "growing", "mature", "at_risk", "dormant", "reactivated"):
        members = batch.index[batch["stage"] == stage]
        contacted = [i for i in members if batch.at[i, "action"] != "no_action"]
        if len(members):
            shown.append((contacted or list(members))[0])
    for i in shown:
        row = batch.loc[i]
        table.add_row(
            str(frame["user_id"].iloc[i]), row["stage"], row["scored_by"], f"{row['p_churn']:.1%}",
            f"{row['p_upgrade']:.1%}", f"{row['value_if_retained']:,.0f}", row["action"], f"{row['delta_stay']:+.4f}",
            f"{row['expected_value']:,.2f}",
        )  # fmt: skip
    console.print(table)
    first = batch.loc[shown[0]] if shown else None
    if first is not None:
        console.print(f"   why {frame['user_id'].iloc[shown[0]]} is {first['stage']}: {first['stage_rule']}")
    counts = batch["action"].value_counts()
    console.print("   action mix: " + ", ".join(f"{a} {n:,}" for a, n in counts.items()))
    for stage in ("at_risk", "dormant"):
        members = batch["stage"] == stage
        contacted = int((members & (batch["action"] != "no_action")).sum())
        console.print(f"   {stage}: {contacted:,} of {int(members.sum()):,} contacted")


DEMO_USERS = ("u000003", "u000007", "u000029")


def serve_env(out: Path, keys: dict[str, list[str]]) -> dict[str, str]:
    """The environment `clm serve` needs over the demo's directory (store, decision log, event data)."""
    out = out.resolve()
    return {
        "CLM_API_KEYS": json.dumps(keys),
        "CLM_ONLINE_STORE": f"sqlite:///{out / 'online.db'}",
        "CLM_DECISION_LOG": f"sqlite:///{out / 'decisions.db'}",
        "CLM_EVENTS_DIR": str(out / "data"),
    }


def _print_decision_timing(console: Console, base: str, key: str, requests: int = 200) -> None:
    """Time `requests` GET decisions over one keep-alive connection (the demo users in turn) and print the
    median and the 99th percentile, as an application asking in a page render would see them."""
    import time

    import httpx
    import numpy as np

    elapsed, failed = [], 0
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
        for i in range(requests):
            started = time.perf_counter()
            response = client.get(f"/v1/users/{DEMO_USERS[i % len(DEMO_USERS)]}/decision")
            elapsed.append(1000 * (time.perf_counter() - started))
            failed += response.status_code != 200
    median, p99 = np.percentile(elapsed, [50, 99])
    console.print(
        f"   {requests} GET decisions over one connection (served from the per-snapshot decision cache): "
        f"median {median:.1f} ms, p99 {p99:.1f} ms, {failed} not 200"
    )


def _serve(console: Console, out: Path) -> dict[str, str]:
    """Start `clm serve` on a free local port over the demo's store, ask it for a few decisions over HTTP,
    open the reviewer pages, print them, stop it; write `OUT/serve.env` for `make review`. Returns the
    reviewer URLs (on port 8000, where `make review` serves)."""
    import secrets
    import time

    import httpx

    from clm.commands.serve import background_server
    from training import tracking

    key, review_key = secrets.token_hex(8), secrets.token_hex(8)
    env = serve_env(out, {key: ["score"], review_key: ["review"]})
    env_file = out / "serve.env"
    env_file.write_text(
        "".join(f"{name}={shlex.quote(value)}\n" for name, value in env.items())
        + f"MLFLOW_TRACKING_URI={shlex.quote(tracking.resolve_tracking_uri(Path.cwd()))}\n"
    )
    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        try:
            with console.status("starting clm serve"):
                base = stack.enter_context(background_server(env, out.resolve()))
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/red]")
            return urls
        store_users = httpx.get(f"{base}/v1/models", headers={"X-API-Key": key}, timeout=10).json()
        table = Table(
            title=f"10. the decision API at {base} (features as of {store_users['store'].get('as_of')})"
        )
        for column in (
            "GET /v1/users/{id}/decision",
            "stage",
            "P(churn)",
            "action",
            "value",
            "ms",
            "top reason",
        ):
            table.add_column(column)
        decision_ids = []
        for user in DEMO_USERS:
            started = time.perf_counter()
            response = httpx.get(f"{base}/v1/users/{user}/decision", headers={"X-API-Key": key}, timeout=30)
            elapsed = 1000 * (time.perf_counter() - started)
            if response.status_code != 200:
                table.add_row(
                    user, f"HTTP {response.status_code}", "", "", "", f"{elapsed:.0f}", response.text[:60]
                )
                continue
            d = response.json()
            decision_ids.append(d["decision_id"])
            reason = (
                d["explanations"]["churn"]["top"][0]["reason"] if d["explanations"]["churn"]["top"] else ""
            )
            table.add_row(
                user, d["stage"]["name"], f"{d['churn']['probability']:.1%} {d['churn']['band']}",
                d["action"]["name"], f"{d['action']['expected_value']:.2f}", f"{elapsed:.0f}", reason,
            )  # fmt: skip
        console.print(table)
        _print_decision_timing(console, base, key)
        pages = {"overview": "/review", "user": f"/review/users/{DEMO_USERS[0]}"}
        if decision_ids:
            pages["replay"] = f"/review/decisions/{decision_ids[0]}"
        review = Table(title="11. the reviewer pages (scope review)")
        for column in ("page", "path", "HTTP", "ms", "KiB"):
            review.add_column(column)
        for name, path in pages.items():
            started = time.perf_counter()
            response = httpx.get(f"{base}{path}", headers={"X-API-Key": review_key}, timeout=120)
            elapsed = 1000 * (time.perf_counter() - started)
            review.add_row(
                name, path, str(response.status_code), f"{elapsed:.0f}", f"{len(response.content) / 1024:.0f}"
            )
            urls[name] = f"http://127.0.0.1:8000{path}"
        console.print(review)
        console.print(
            f"   try the API: `make review` (clm serve on 127.0.0.1:8000 with {env_file}), then "
            f"curl -H 'X-API-Key: {key}' http://127.0.0.1:8000/v1/users/{DEMO_USERS[0]}/decision (OpenAPI at /docs)"
        )
    urls["review_key"] = review_key
    return urls
