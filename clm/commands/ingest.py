"""`clm ingest` (placeholder until the ingest module lands)."""

import typer


def ingest() -> None:
    raise typer.Exit(2)
