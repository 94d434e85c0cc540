"""`clm simulate`: write a synthetic product's data directory with its ground truth."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from clm.config_schema import ClmConfig

log = logging.getLogger(__name__)


def _parse_date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option) from exc


def value_truth(config: ClmConfig, margin_params: type):
    """The simulator's margin-truth parameters from the config (`[simulation]`, `[value]`)."""
    return margin_params(
        horizon_months=config.simulation.value_horizon_months,
        discount_rate_annual=config.value.discount_rate_annual,
        margin_share=config.value.margin_share,
        last_cutoffs=config.simulation.margin_truth_cutoffs,
    )


def simulate(
    out: Annotated[Path, typer.Option("--out", help="Data directory to write (replaced if it exists).")],
    users: Annotated[
        int, typer.Option("--users", min=1, help="Number of users who sign up over the period.")
    ] = 5000,
    days: Annotated[int, typer.Option("--days", min=1, help="Length of the simulated period in days.")] = 365,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed; the same seed gives byte-identical files.")
    ] = 0,
    start: Annotated[str, typer.Option("--start", help="First simulated day (YYYY-MM-DD).")] = "2025-01-01",
    truth_cutoffs: Annotated[
        str | None,
        typer.Option(
            "--truth-cutoffs",
            help="Cutoffs for the ground truth: '2025-03-01,2025-06-01' or 'monthly:2025-03-01..2025-12-01'. "
            "Default: the first day of each month after the first 60 days.",
        ),
    ] = None,
    horizon_days: Annotated[
        int | None,
        typer.Option("--horizon-days", min=1, help="Truth horizon in days (default from config: 30)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary instead of text.")] = False,
) -> None:
    """Simulate users through their lifecycle and write events, users, subscriptions, campaigns and truth."""
    # imported here so that `clm simulate --help` does not pay for numpy, pyarrow and the simulator
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from clm.commands.features import echo_summary
    from clm.config import load_config
    from clm.settings import Settings
    from features.cutoffs import CutoffSpecError, parse_cutoffs
    from simulation.io import simulate_to_directory
    from simulation.truth import MarginParams

    settings = Settings()
    config = load_config(settings.config)
    start_date = _parse_date(start, "--start")
    try:
        cutoffs = parse_cutoffs(truth_cutoffs) if truth_cutoffs else None
    except CutoffSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--truth-cutoffs") from exc
    horizon = horizon_days or config.simulation.horizon_days
    console = Console(stderr=True)
    with Progress(
        TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("days"), TimeElapsedColumn(),
        console=console, transient=True, disable=as_json or not console.is_terminal,
    ) as progress:  # fmt: skip
        task = progress.add_task("days", total=days)
        try:
            world = simulate_to_directory(
                out, users, days, seed, start_date, truth_cutoffs=cutoffs, horizon_days=horizon,
                progress=lambda done, total: progress.update(task, completed=done),
                value_truth=value_truth(config, MarginParams),
            )  # fmt: skip
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    summary = {
        "out": str(out),
        "users": world.users.num_rows,
        "events": world.events.num_rows,
        "subscriptions": world.subscriptions.num_rows,
        "campaigns": world.campaigns.num_rows,
        "truth_rows": world.outcomes.num_rows,
        "truth_cutoffs": world.manifest["truth_cutoffs"],
    }
    echo_summary(
        summary, as_json,
        f"wrote {out}: {summary['users']:,} users, {summary['events']:,} events, "
        f"{summary['subscriptions']:,} subscriptions, {summary['campaigns']:,} campaign rows, "
        f"truth at {len(summary['truth_cutoffs'])} cutoffs",
    )  # fmt: skip
