"""`clm features build` and `clm features materialize`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from clm.config_schema import ClmConfig
    from clm.settings import Settings
    from features.build import LabelParams
    from features.registry import FeatureParams

# The heavy imports (Ibis, pandas, the feature jobs, pydantic settings) wait inside the functions: `clm
# features --help`, and every command module that borrows the options below, stays well under a second.

log = logging.getLogger(__name__)
app = typer.Typer(help="Point-in-time features, labels and the online store.", no_args_is_help=True)


def feature_params(config: ClmConfig) -> FeatureParams:
    from features.registry import FeatureParams

    return FeatureParams.from_config(config.features)


def label_params(config: ClmConfig, horizon_days: int | None = None) -> LabelParams:
    from features.build import LabelParams

    return LabelParams.from_config(config.labels, horizon_days=horizon_days)


def contact_params(config: ClmConfig, models: Any = None) -> Any:
    """The per-action contact state to join beside the features (features.contacts): for the actions of the
    policy that decides (`models`, a DecisionModels), else of the config's catalogue."""
    from models.catalog import contact_params as params

    if models is None:
        return params(config)
    return params(config, models.policy.catalog, models.policy.contact)


# `--decision-log` of the commands that read a snapshot's contact history.
HistoryLog = Annotated[
    str | None,
    typer.Option(
        "--decision-log",
        help="Add this decision log's decisions (sqlite:///PATH or postgresql://…) to the campaign history the "
        "contact state (cooldowns, caps, negative outcomes) is computed from: a contact the campaigns file holds "
        "too (same user, day and action) counts once.",
    ),
]


@contextlib.contextmanager
def logged_history(data: Path, url: str | None, *, missing_ok: bool = False) -> Iterator[Path]:
    """`data` seen with the decision log's decisions in its campaign history (training.history); says on stderr
    how many rows came from where. Without `url` (or, `missing_ok`, a SQLite log that does not exist), `data`."""
    missing = (
        url is not None and url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists()
    )
    if url is None or (missing and missing_ok):
        yield data
        return
    import pandas as pd

    from features.datadir import resolve_data_dir
    from serving.decision_log import DecisionLog
    from training.history import with_logged_decisions

    if missing:
        raise ValueError(f"--decision-log: no decision log at {url}")
    log_store = DecisionLog(url)
    try:
        logged = pd.DataFrame(log_store.read_decisions(), columns=["user_id", "ts", "action", "propensity"])
    finally:
        log_store.close()
    with with_logged_decisions(data, logged) as (view, counts):
        typer.echo(
            f"campaign history: {counts.from_file:,} rows from {resolve_data_dir(data) / 'campaigns.parquet'}, "
            f"{counts.from_log:,} logged decisions ({counts.repeated:,} repeats of a user's day left out, "
            f"{counts.duplicates:,} also in the file counted once): {counts.rows:,} rows",
            err=True,
        )
        yield view


# The `--data` option of the commands that read a canonical data directory.
DataDir = Annotated[Path, typer.Option("--data", help="Canonical data directory.")]
# The same for the commands with an --engine: on Spark any URI it reads (a Path would fold `s3a://`).
DataLocation = Annotated[
    str, typer.Option("--data", help="Canonical data directory; on Spark any URI it reads.")
]
# The required `--as-of` of `clm score` and `clm report`.
DecisionDate = Annotated[
    str, typer.Option("--as-of", help="Decide as of this date (YYYY-MM-DD): only events before it are used.")
]
# The `--budget` option of `clm score` and `clm report`.
Budget = Annotated[
    float | None,
    typer.Option(
        "--budget", min=0.0, help="Total campaign budget: plan the contacts that pay most within it, against "
        "the policy's unconstrained choice.",
    ),
]  # fmt: skip


class EngineChoice(StrEnum):
    duckdb = "duckdb"
    spark = "spark"


# The `--engine` option of the commands that build features (default: the `engine` setting, CLM_ENGINE).
Engine = Annotated[
    EngineChoice | None,
    typer.Option(
        "--engine", help="duckdb (in process) or spark (the spark_master setting); default: CLM_ENGINE."
    ),
]


def engine_connection(settings: Settings, engine: EngineChoice | None, command: str) -> Any:
    """The Ibis backend `engine` names (the `engine` setting when None): None for DuckDB (the jobs open
    their own), a Spark session from the settings for Spark — exiting 2 with what is missing when it
    cannot start."""
    if (engine or settings.engine) == "duckdb":
        return None
    from features.spark import SparkUnavailable, connect, parse_conf

    try:
        return connect(settings.spark_master, parse_conf(settings.spark_conf))
    except (SparkUnavailable, ValueError) as exc:
        typer.echo(f"{command}: {exc}", err=True)
        raise typer.Exit(2) from exc


def date_option(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option) from exc


def echo_summary(summary: dict[str, Any], as_json: bool, text: str) -> None:
    """A command's result: one JSON line with `--json`, else the sentence for a person."""
    typer.echo(json.dumps(summary) if as_json else text)


def default_store_url(settings: Settings) -> str:
    return settings.online_store or f"sqlite:///{(settings.data_dir / 'online.db').resolve()}"


@app.command(
    "build",
    help="Build features and labels per (user, cutoff) into OUT/features.parquet and OUT/labels.parquet.",
)
def build(
    data: Annotated[
        str,
        typer.Option("--data", help="Canonical data directory (from ingest or simulate); on Spark any URI."),
    ],
    cutoffs: Annotated[
        str,
        typer.Option(
            "--cutoffs", help="One date, a list '2025-03-01,2025-06-01', or 'monthly:A..B' / 'weekly:A..B'."
        ),
    ],
    out: Annotated[str, typer.Option("--out", help="Output directory; on Spark any URI it writes.")],
    horizon_days: Annotated[
        int | None, typer.Option("--horizon-days", min=1, help="Label horizon (default: config).")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Behave as if run on this date: nothing at or after it is read."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary.")] = False,
    engine: Engine = None,
) -> None:
    """Build the offline feature and label tables."""
    from rich.console import Console

    from clm.config import load_config
    from clm.settings import Settings
    from features.cutoffs import CutoffSpecError, parse_cutoffs
    from features.jobs import DataDirectoryError, build_feature_tables

    settings = Settings()
    config = load_config(settings.config)
    try:
        dates = parse_cutoffs(cutoffs)
    except CutoffSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--cutoffs") from exc
    console = Console(stderr=True)
    con = engine_connection(settings, engine, "clm features build")
    try:
        with console.status(f"building features at {len(dates)} cutoffs", spinner="dots"):
            summary = build_feature_tables(
                data, dates, out, params=feature_params(config), label_params=label_params(config, horizon_days),
                as_of=date_option(as_of, "--as-of"), con=con,
            )  # fmt: skip
    except (DataDirectoryError, ValueError) as exc:
        typer.echo(f"clm features build: {exc}", err=True)
        raise typer.Exit(2) from exc
    result = {
        "features": str(summary.features_path),
        "labels": str(summary.labels_path),
        "rows": summary.rows,
        "users": summary.users,
        "cutoffs": [c.isoformat() for c in summary.cutoffs],
        "labelled_rows": summary.label_rows_known,
        "feature_version": summary.feature_version,
        "data_end": summary.data_end.isoformat(),
    }
    echo_summary(
        result, as_json,
        f"wrote {summary.rows:,} rows ({summary.users:,} users × {len(summary.cutoffs)} cutoffs) to "
        f"{summary.features_path} and {summary.labels_path}; {summary.label_rows_known:,} rows have closed "
        f"labels; features {summary.feature_version}",
    )  # fmt: skip


@app.command(
    "materialize", help="Write every user's latest feature vector to the online store (CLM_ONLINE_STORE)."
)
def materialize(
    data: DataLocation,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Snapshot as of this date (default: the data's end).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="sqlite:///PATH or redis://HOST:PORT/DB (default: CLM_ONLINE_STORE)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary.")] = False,
    engine: Engine = None,
    decision_log: HistoryLog = None,
) -> None:
    """Materialize the latest features per user into the online store, with each user's contact state (days
    since each action, contacts per action and window, negative outcomes) beside them."""
    from rich.console import Console

    from clm.config import load_config
    from clm.settings import Settings
    from features.jobs import DataDirectoryError, materialize_latest

    settings = Settings()
    config = load_config(settings.config)
    params = feature_params(config)
    url = store or default_store_url(settings)
    console = Console(stderr=True)
    con = engine_connection(settings, engine, "clm features materialize")
    try:
        with (
            logged_history(Path(data), decision_log) as source,
            console.status(f"computing the latest feature vectors and writing them to {url}", spinner="dots"),
        ):
            info, _ = materialize_latest(
                source if decision_log is not None else data, url, params=params,
                as_of=date_option(as_of, "--as-of"), con=con, contacts=contact_params(config),
            )  # fmt: skip
        snapshot_date = info.as_of
    except (DataDirectoryError, ValueError, OSError) as exc:
        typer.echo(f"clm features materialize: {exc}", err=True)
        raise typer.Exit(2) from exc
    result = {
        "store": url,
        "users": info.n_users,
        "as_of": snapshot_date.isoformat(),
        "feature_version": info.feature_version,
    }
    typer.echo(
        json.dumps(result)
        if as_json
        else f"materialized {info.n_users:,} users as of {snapshot_date} into {url}"
    )
