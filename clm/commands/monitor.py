"""`clm monitor`: drift between the snapshot the champion models were trained on and the current one."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from clm.commands.features import DataDir, date_option
from clm.config import load_config
from clm.config_schema import ClmConfig
from clm.settings import Settings


def monitor(
    data: DataDir,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="The current snapshot (YYYY-MM-DD); default: the day after the last event."
        ),
    ] = None,
    alias: Annotated[
        str, typer.Option("--alias", help="Registry alias of the models to monitor.")
    ] = "champion",
    decision_log: Annotated[
        str | None,
        typer.Option(
            "--decision-log",
            help="Decision log URL for the lift check (default: CLM_DECISION_LOG, "
            "else DATA_DIR/decisions.db when it exists; 'none' skips it).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole drift report as JSON.")] = False,
) -> None:
    """Per-feature drift (PSI, KS / chi-square, missing rate), score drift, stage and action mix, expected
    value by stage, and predicted vs measured lift once outcomes are logged; breaches are WARNING lines."""
    day = date_option(as_of, "--as-of")
    from features.jobs import DataDirectoryError
    from models.decision import ModelsMissing
    from training import tracking

    settings = Settings()
    config = load_config(settings.config)
    tracking.configure(tracking.resolve_tracking_uri(Path.cwd()))
    try:
        result = run_monitor(
            data, config, as_of=day, alias=alias, decision_log=log_url(decision_log, settings)
        )
    except ModelsMissing as exc:
        typer.echo(f"clm monitor: {exc}", err=True)
        raise typer.Exit(2) from exc
    except (DataDirectoryError, ValueError) as exc:
        typer.echo(f"clm monitor: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2, ensure_ascii=False))
        return
    for line in result.summary_lines():
        typer.echo(line, err=line.startswith("WARNING"))


def log_url(option: str | None, settings: Settings) -> str | None:
    """The decision log to read: the option, else CLM_DECISION_LOG, else the data directory's SQLite file
    when it exists; None when there is none (or the option says `none`)."""
    from serving.settings import ServingSettings

    if option is not None:
        return None if option.lower() == "none" else option
    serving = ServingSettings()
    if serving.decision_log:
        return serving.decision_log
    default = Path(settings.data_dir) / "decisions.db"
    return f"sqlite:///{default}" if default.exists() else None


def run_monitor(
    data: Path, config: ClmConfig, *, as_of: dt.date | None = None, alias: str = "champion",
    decision_log: str | None = None, models: Any = None,
) -> Any:  # fmt: skip
    """The drift report of `data` as of `as_of` against the champion's training cutoffs (`clm monitor`,
    `clm demo`). Raises DataDirectoryError, ModelsMissing or ValueError with a message for the user."""
    from features.build import LabelParams
    from features.jobs import DataDirectoryError, connect, feature_history, load_inputs
    from features.registry import FeatureParams
    from models.catalog import contact_params
    from models.decision import load_decision_models
    from models.drift import DriftThresholds
    from models.monitoring import describe_snapshot, monitor, training_cutoffs

    models = models or load_decision_models(config, aliases=(alias,), optional=("upgrade", "policy"))
    reference_cutoffs = training_cutoffs(models)
    if not reference_cutoffs:
        raise ValueError(f"{models.label(models.churn)} records no training cutoffs: nothing to compare with")
    inputs = load_inputs(connect(), Path(data))
    day = as_of or inputs.data_end
    if day > inputs.data_end:
        raise DataDirectoryError(f"--as-of {day} is after the end of the data in {data} ({inputs.data_end})")
    frame = feature_history(
        Path(data), sorted({*reference_cutoffs, day}), params=FeatureParams.from_config(config.features),
        label_params=LabelParams.from_config(config.labels),
        contacts=contact_params(config, models.policy.catalog, models.policy.contact),  # the decisions' contact state
    )  # fmt: skip
    reference = frame[frame["cutoff"].isin(reference_cutoffs)].reset_index(drop=True)
    current = frame[frame["cutoff"] == day].reset_index(drop=True)
    logged = None
    if decision_log is not None:
        from serving.logged_outcomes import read_logged_outcomes

        logged = read_logged_outcomes(decision_log)
    return monitor(
        reference, current, models, DriftThresholds.from_config(config.monitor),
        reference=describe_snapshot(reference_cutoffs, len(reference), f"training cutoffs of {models.label(models.churn)}:"),
        current=describe_snapshot([day], len(current), "snapshot"),
        logged=logged, lift_min_users=config.monitor.lift_min_users,
    )  # fmt: skip
