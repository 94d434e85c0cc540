"""`clm report`: the campaign report of a batch scoring run as one self-contained HTML file."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from clm.commands.features import Budget, DataDir, DecisionDate, date_option, logged_history
from clm.commands.policy import latent_to_product_stage, simulated_truth
from clm.config import config_digest, load_config
from clm.config_schema import ClmConfig
from clm.settings import Settings


def report(
    data: DataDir,
    as_of: DecisionDate,
    out: Annotated[Path, typer.Option("--out", help="Output file (.html).")],
    budget: Budget = None,
    alias: Annotated[
        str, typer.Option("--alias", help="Registry alias of the models and the policy to report on.")
    ] = "champion",
    decision_log: Annotated[
        str | None,
        typer.Option(
            "--decision-log",
            help="Measure the lift of this decision log's decisions (sqlite:///PATH or "
            "postgresql://…; default CLM_DECISION_LOG when it exists). Given here, its decisions also join the "
            "campaign history the contact state (cooldowns, caps, negative outcomes) is computed from, each "
            "contact once.",
        ),
    ] = None,
) -> None:
    """Stage mix, action mix and budget, score distributions, global drivers, calibration and the policy's
    evaluation as one HTML file that opens with no server and no network."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise typer.BadParameter("the report is an HTML file: the name must end in .html", param_hint="--out")
    day = date_option(as_of, "--as-of")
    assert day is not None
    from features.jobs import DataDirectoryError
    from models.decision import ModelsMissing
    from training import tracking
    from training.dataset import NotEnoughHistory

    started = time.perf_counter()
    settings = Settings()
    config = load_config(settings.config)
    tracking.configure(tracking.resolve_tracking_uri(Path.cwd()))
    try:
        written, summary = write_report(data, day, out, config=config, budget=budget, alias=alias,
                                        config_source=settings.config, lift_log=decision_log)  # fmt: skip
    except ModelsMissing as exc:
        promote = " (and `clm promote` to make it @champion)" if alias == "champion" else ""
        typer.echo(f"clm report: {exc}{promote}", err=True)
        raise typer.Exit(2) from exc
    except (DataDirectoryError, NotEnoughHistory, ValueError) as exc:
        typer.echo(f"clm report: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"wrote {out} ({written / 1e6:.1f} MB, {time.perf_counter() - started:.0f} s): {summary}")


def write_report(
    data: Path,
    day: dt.date,
    out: Path,
    *,
    config: ClmConfig,
    budget: float | None = None,
    alias: str = "champion",
    config_source: object = None,
    status: Callable[[str], None] | None = None,
    lift_log: str | None = None,
) -> tuple[int, str]:
    """Build the report for the data as of `day` and write it to `out`; returns its size in bytes and a
    one-line summary. Used by `clm report` and `clm demo`."""
    from models.decision import load_decision_models
    from training.report import ReportContext, build_report, gather_report_inputs, render_report, summary_line

    models = load_decision_models(config, aliases=(alias,))
    truth = simulated_truth(data)
    context = ReportContext(
        data_dir=str(data.resolve()),
        config_source=str(config_source) if config_source else "shipped defaults (clm/defaults.toml)",
        config_version=config.version,
        config_digest=config_digest(config),
        generated_at=dt.datetime.now(dt.UTC),
        truth_dir=None if truth is None else str(truth.resolve()),
    )
    # an explicit log's decisions join the contact history (a missing one: the lift section says so)
    with logged_history(data, lift_log, missing_ok=True) as source:
        inputs = gather_report_inputs(
            source, config=config, as_of=day, models=models, context=context, project_root=Path.cwd(),
            budget=budget, truth_dir=truth, latent_to_stage=None if truth is None else latent_to_product_stage(),
            progress=status or (lambda message: None), stale_after_days=config.serving.stale_after_days,
        )  # fmt: skip
    inputs.lift, inputs.lift_source = measured_lift(config, lift_log)
    if status:
        status("figures and tables")
    report_data = build_report(inputs)
    html = render_report(report_data)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return len(html.encode()), summary_line(report_data)


def measured_lift(config: ClmConfig, url: str | None) -> tuple[object, str | None]:
    """The lift table of the decision log at `url` (else the serving settings' log, when its file exists) and
    where it came from; (None, why not) when there is no log to read."""
    import pandas as pd

    from serving.decision_log import DecisionLog, DecisionLogError
    from serving.lift import logged_lift
    from serving.settings import ServingSettings

    settings = ServingSettings()
    url = url or settings.decision_log_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None, f"no decision log at {url}"
    try:
        log = DecisionLog(url, schema=settings.decision_log_schema)
    except (DecisionLogError, ValueError) as exc:
        return None, f"the decision log could not be read: {exc}"
    try:
        table: pd.DataFrame = logged_lift(log, config.lift)
    finally:
        log.close()
    if not len(table) or not table["n_treated"].sum():
        return None, f"{log.url} has no decision whose {config.lift.horizon_days}-day horizon has closed"
    return (
        table,
        f"{log.url} (each user's first decision whose {config.lift.horizon_days}-day horizon closed)",
    )
