"""`clm report`: the campaign report of a batch scoring run as one self-contained HTML file."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clm.commands.features import date_option
from clm.config import config_digest, load_config
from clm.settings import Settings
from features.jobs import DataDirectoryError
from training import tracking
from training.dataset import NotEnoughHistory


def _truth_dir(data: Path) -> Path | None:
    """The simulator truth beside the data, where `clm evaluate-policy` looks for it."""
    return next(
        (p for p in (data / "truth", data.parent / "raw" / "truth") if (p / "effects.parquet").exists()), None
    )


def report(
    data: Annotated[Path, typer.Option("--data", help="Canonical data directory.")],
    as_of: Annotated[
        str, typer.Option("--as-of", help="Report on the decisions as of this date (YYYY-MM-DD).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output file (.html).")],
    budget: Annotated[
        float | None,
        typer.Option(
            "--budget", min=0.0, help="Campaign budget: show the plan within it against the policy's choice."
        ),
    ] = None,
    alias: Annotated[
        str, typer.Option("--alias", help="Registry alias of the models and the policy to report on.")
    ] = "champion",
) -> None:
    """Stage mix, action mix and budget, score distributions, global drivers, calibration and the policy's
    evaluation as one HTML file that opens with no server and no network."""
    from training.evaluate_policy import load_policy_by_alias
    from training.policy import load_scoring_models
    from training.report import ReportContext, build_report, gather_report_inputs, render_report, summary_line

    if out.suffix.lower() not in (".html", ".htm"):
        raise typer.BadParameter("the report is an HTML file: the name must end in .html", param_hint="--out")
    day = date_option(as_of, "--as-of")
    assert day is not None
    started = time.perf_counter()
    settings = Settings()
    config = load_config(settings.config)
    tracking.configure(tracking.resolve_tracking_uri(Path.cwd()))
    try:
        models = load_scoring_models(config, aliases=(alias,))
        policy, policy_version = load_policy_by_alias(config, aliases=(alias,))
    except Exception as exc:
        typer.echo(f"clm report: {exc}; run `clm train` and `clm promote` first", err=True)
        raise typer.Exit(2) from exc
    truth = _truth_dir(data)
    context = ReportContext(
        data_dir=str(data.resolve()),
        config_source=str(settings.config) if settings.config else "shipped defaults (clm/defaults.toml)",
        config_version=str(config.get("version", "?")),
        config_digest=config_digest(config),
        generated_at=dt.datetime.now(dt.UTC),
        truth_dir=None if truth is None else str(truth.resolve()),
    )
    console = Console(stderr=True)
    try:
        with console.status("building the report") as status:
            inputs = gather_report_inputs(
                data, config=config, as_of=day, models=models, policy=policy, policy_version=policy_version,
                context=context, project_root=Path.cwd(), budget=budget, alias=alias, truth_dir=truth,
                progress=lambda message: status.update(message),
            )  # fmt: skip
            status.update("figures and tables")
            report_data = build_report(inputs)
    except (DataDirectoryError, NotEnoughHistory, ValueError) as exc:
        typer.echo(f"clm report: {exc}", err=True)
        raise typer.Exit(2) from exc
    html = render_report(report_data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    typer.echo(
        f"wrote {out} ({len(html.encode()) / 1e6:.1f} MB, {time.perf_counter() - started:.0f} s): "
        f"{summary_line(report_data)}"
    )
