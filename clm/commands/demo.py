"""`clm demo` (filled in below)."""

import typer


def demo(out: str = "data/demo") -> None:
    raise typer.Exit(2)
