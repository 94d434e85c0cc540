"""The `clm` command line: glue between settings, config and the packages.

The commands are lazy: this module names them with their one-line help and imports a command's module
only when that command runs or its own help is asked for. `clm --help` therefore imports no command
module at all, and `clm COMMAND --help` only the command's (whose heavy imports wait inside the command
functions) — a help screen in well under a second instead of the 15 s it took to import mlflow, sklearn
and pandas for every command.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import typer
from typer import _click as click  # Typer 0.29 vendors Click: its commands are these classes
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True)
class LazyCommandSpec:
    """Where a command lives (`module:attribute`, a function or a Typer app) and its one-line help."""

    target: str
    help: str


# In the order `clm --help` lists them (Typer lists command groups after plain commands).
COMMANDS: dict[str, LazyCommandSpec] = {
    "simulate": LazyCommandSpec(
        "clm.commands.simulate:simulate", "Simulate a product's users and write events plus the ground truth."
    ),
    "ingest": LazyCommandSpec(
        "clm.commands.ingest:ingest",
        "Validate raw events/users/subscriptions/campaigns into the canonical data directory.",
    ),
    "train": LazyCommandSpec(
        "clm.commands.models:train",
        "Train, backtest and register the churn/upgrade models and the policy (@challenger).",
    ),
    "evaluate": LazyCommandSpec(
        "clm.commands.models:evaluate", "Evaluate a registered model version on a data directory's backtest."
    ),
    "promote": LazyCommandSpec(
        "clm.commands.models:promote",
        "Promote @challenger to @champion if no worse and the behaviour checks pass.",
    ),
    "score": LazyCommandSpec(
        "clm.commands.models:score",
        "Stage, scores, CLV and next best action for every user as of a date (@champion).",
    ),
    "evaluate-policy": LazyCommandSpec(
        "clm.commands.policy:evaluate_policy",
        "The policy's value per 1,000 users against baselines and the oracle; IPS/DR.",
    ),
    "lift": LazyCommandSpec(
        "clm.commands.lift:lift",
        "Measured lift from the decision log: treated vs control group and per action, with 95 % intervals.",
    ),
    "monitor": LazyCommandSpec(
        "clm.commands.monitor:monitor",
        "Drift between the training snapshot and the current one: features, scores, stage and action mix, lift.",
    ),
    "report": LazyCommandSpec(
        "clm.commands.report:report",
        "A campaign report as one self-contained HTML file: stages, actions, budget, drivers, calibration.",
    ),
    "serve": LazyCommandSpec(
        "clm.commands.serve:serve",
        "Serve decisions over HTTP (FastAPI under uvicorn) with the @champion models.",
    ),
    "demo": LazyCommandSpec(
        "clm.commands.demo:demo",
        "Run the main job end to end on a small simulated world and print a summary.",
    ),
    "features": LazyCommandSpec(
        "clm.commands.features:app", "Build point-in-time features and labels; fill the online store."
    ),
}


def load_command(name: str, spec: LazyCommandSpec) -> click.Command:
    """Import the command's module and build its Click command exactly as `app.command(name, help=...)`
    (or `app.add_typer(sub_app, name=..., help=...)`) would have."""
    module_name, attribute = spec.target.split(":")
    target = getattr(importlib.import_module(module_name), attribute)
    holder = typer.Typer(add_completion=False)
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name, help=spec.help)
    else:
        holder.command(name, help=spec.help)(target)
        # a second, hidden command keeps Typer from collapsing the holder into the command itself
        holder.command("_", hidden=True)(lambda: None)
    group = typer.main.get_command(holder)
    assert isinstance(group, TyperGroup)
    command = group.commands[name]
    return command


class LazyCommand(TyperCommand):
    """A stand-in listed by `clm --help` that loads the real command the moment it is used."""

    def __init__(self, name: str, spec: LazyCommandSpec) -> None:
        super().__init__(name=name, help=spec.help, short_help=spec.help)
        self.spec = spec
        self._real: click.Command | None = None

    def real(self) -> click.Command:
        if self._real is None:
            self._real = load_command(self.name or "", self.spec)
        return self._real

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any) -> click.Context:  # fmt: skip
        return self.real().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        return self.real().invoke(ctx)


class LazyGroup(TyperGroup):
    """The top-level group: every command a `LazyCommand`, in the order of `COMMANDS`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, spec in COMMANDS.items():
            self.commands[name] = LazyCommand(name, spec)

    def invoke(self, ctx: click.Context) -> Any:
        from clm.config import ConfigError

        try:
            return super().invoke(ctx)
        except ConfigError as exc:  # a user's config mistake: name the key, no traceback
            typer.echo(f"clm: {exc}", err=True)
            raise typer.Exit(2) from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)


app = typer.Typer(
    name="clm",
    cls=LazyGroup,
    help="Customer lifecycle management: simulate, ingest, build features, train, score, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Customer lifecycle management: simulate, ingest, build features, train, score, serve."""


if __name__ == "__main__":
    app()
