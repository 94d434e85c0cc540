"""`clm ingest`: raw exports into the canonical data directory, with every rejected row kept and counted."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clm.config import ConfigError, load_config
from clm.progress import status_steps

if TYPE_CHECKING:
    from clm.settings import Settings
    from features.config import IngestSection
    from features.ingest import IngestCounts, IngestOptions

# pandas, pyarrow, pandera and pydantic-settings are imported inside the functions, so that `clm ingest
# --help` stays well under a second.

USAGE_ERROR = 2
FAULT_ENV = "CLM_INGEST_FAULT"

InputFile = Annotated[
    Path | None,
    typer.Option(help="Optional input (.csv, .csv.gz, .parquet, .pq).", dir_okay=False, show_default=False),
]


def ingest_options(section: IngestSection, settings: Settings, timezone: str | None) -> IngestOptions:
    """Ingest options from the config's [ingest] table; the time zone is --timezone, else CLM_TIMEZONE, else config."""
    from features.ingest import IngestOptions

    if timezone is None:
        explicit = "timezone" in settings.model_fields_set
        timezone = settings.timezone if explicit else section.timezone
    return IngestOptions(
        timezone=timezone,
        duplicate_key=tuple(section.duplicate_key),
        non_negative_amount_event_types=tuple(section.non_negative_amount_event_types),
        event_types=None if section.event_types is None else tuple(section.event_types),
        earliest_timestamp=dt.date.fromisoformat(section.earliest_timestamp),
        max_days_after_run=section.max_days_after_run,
        max_field_bytes=section.max_field_bytes,
        min_accepted_share=section.min_accepted_share,
    )


def fault_checkpoint(step: str | None) -> Callable[[str], None] | None:
    """The fault hook of CLM_INGEST_FAULT (tests only): kill this process with SIGKILL when the run reaches
    `step` (one of features.datadir.STEPS), to check that a killed run leaves the old data intact."""
    from features.datadir import STEPS

    if not step:
        return None
    if step not in STEPS:
        raise ValueError(f"{FAULT_ENV}={step!r} is not a step; expected one of {', '.join(STEPS)}")

    def checkpoint(reached: str) -> None:
        if reached == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return checkpoint


def _summary_table(counts: dict[str, IngestCounts]) -> Table:
    table = Table(title="clm ingest")
    for name in ("input", "read", "accepted", "rejected", "duplicates", "rejected by reason"):
        table.add_column(name, justify="left" if name in ("input", "rejected by reason") else "right")
    for kind, count in counts.items():
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in count.rejected_by_reason.items())
        table.add_row(
            kind,
            f"{count.read:,}",
            f"{count.accepted:,}",
            f"{count.rejected:,}",
            f"{count.duplicates:,}",
            reasons or "-",
        )
    return table


def ingest(
    events: Annotated[
        Path,
        typer.Option(
            help="The event log (.csv, .csv.gz, .parquet, .pq).", dir_okay=False, show_default=False
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Canonical data directory to write.", file_okay=False, show_default=False)
    ],
    users: InputFile = None,
    subscriptions: InputFile = None,
    campaigns: InputFile = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            help="TOML column mapping: one table per input (events, users, subscriptions, campaigns).",
            dir_okay=False,
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Business config TOML merged over the defaults (else CLM_CONFIG).")
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(help="Time zone of naive timestamps (else CLM_TIMEZONE, else config ingest.timezone)."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object of counts per input, one per line.")
    ] = False,
) -> None:
    """Validate raw events (and users, subscriptions, campaigns) into DIR as its new current version, all or
    nothing; bad rows go to the version's rejects.parquet."""
    from pydantic import ValidationError

    from clm.settings import Settings
    from features.datadir import DataDirectoryError
    from features.ingest import REJECTS_FILE, IngestRefused, InputError, ingest_files
    from features.mapping import MappingError, load_mapping

    err = Console(stderr=True)

    def fail(exc: Exception) -> typer.Exit:
        err.print(f"[bold red]clm ingest:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return typer.Exit(USAGE_ERROR)

    try:
        settings = Settings()
        options = ingest_options(load_config(config or settings.config).ingest, settings, timezone)
        column_mapping = load_mapping(mapping) if mapping is not None else None
        checkpoint = fault_checkpoint(os.environ.get(FAULT_ENV))
    except (ConfigError, MappingError, ValidationError, ValueError) as exc:
        raise fail(exc) from None
    try:
        with status_steps(err, f"ingesting into {out}") as step:
            run = ingest_files(
                out,
                events=events,
                users=users,
                subscriptions=subscriptions,
                campaigns=campaigns,
                mapping=column_mapping,
                options=options,
                progress=step,
                checkpoint=checkpoint,
            )
    except IngestRefused as exc:
        err.print(_summary_table(exc.counts))
        for example in exc.examples:
            err.print(f"  {example}", soft_wrap=True, highlight=False, markup=False)
        raise fail(exc) from None
    except (InputError, MappingError, DataDirectoryError) as exc:
        raise fail(exc) from None
    # notes (leftovers cleaned, a flat directory migrated, inputs kept) go to stderr under --json
    notes = err if json_output else Console()
    for note in run.notes:
        notes.print(f"{out}: {note}", soft_wrap=True, highlight=False, markup=False)
    if json_output:
        for count in run.counts.values():
            typer.echo(json.dumps(count.as_dict()))
        return
    console = Console()
    console.print(_summary_table(run.counts))
    for count in run.counts.values():
        note = count.start_note()
        if note:
            console.print(f"{count.input}: {note}", soft_wrap=True, highlight=False, markup=False)
    console.print(
        f"wrote {out} version {run.publication.version} (rejected and duplicate rows with their reasons: "
        f"{run.data_path / REJECTS_FILE})",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
