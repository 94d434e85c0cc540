"""The `clm` command line: glue between settings, config and the packages."""

from __future__ import annotations

import typer

from clm.commands import demo, features, ingest, simulate

app = typer.Typer(
    name="clm",
    help="Customer lifecycle management: simulate, ingest, build features, train, score, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("simulate", help="Simulate a product's users and write events plus the ground truth.")(
    simulate.simulate
)
app.command(
    "ingest", help="Validate raw events/users/subscriptions/campaigns into the canonical data directory."
)(ingest.ingest)
app.add_typer(
    features.app, name="features", help="Build point-in-time features and labels; fill the online store."
)
app.command("demo", help="Run the main job end to end on a small simulated world and print a summary.")(
    demo.demo
)


if __name__ == "__main__":
    app()
