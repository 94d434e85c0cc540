"""The `clm` command line: glue between settings, config and the packages."""

from __future__ import annotations

import typer

from clm.commands import demo, features, ingest, models, policy, report, serve, simulate

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
app.command(
    "train", help="Train, backtest and register the churn/upgrade models and the policy (@challenger)."
)(models.train)
app.command("evaluate", help="Evaluate a registered model version on a data directory's backtest.")(
    models.evaluate
)
app.command("promote", help="Promote @challenger to @champion if no worse and the behaviour checks pass.")(
    models.promote
)
app.command("score", help="Stage, scores, CLV and next best action for every user as of a date (@champion).")(
    models.score
)
app.command(
    "evaluate-policy", help="The policy's value per 1,000 users against baselines and the oracle; IPS/DR."
)(policy.evaluate_policy)
app.command(
    "report",
    help="A campaign report as one self-contained HTML file: stages, actions, budget, drivers, calibration.",
)(report.report)
app.command("serve", help="Serve decisions over HTTP (FastAPI under uvicorn) with the @champion models.")(
    serve.serve
)
app.command("demo", help="Run the main job end to end on a small simulated world and print a summary.")(
    demo.demo
)


if __name__ == "__main__":
    app()
