"""`clm train`, `clm evaluate`, `clm promote`, `clm score`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from clm.commands.features import (
    Budget,
    DataDir,
    DataLocation,
    DecisionDate,
    Engine,
    HistoryLog,
    contact_params,
    date_option,
    engine_connection,
    feature_params,
    logged_history,
)
from clm.config import load_config
from clm.progress import Step, quiet_third_party, status_steps, step_lines

# mlflow, sklearn, lightgbm, pandas, numpy and the training package are imported inside the commands, so
# that `clm train --help` (and the others) stay well under a second.

log = logging.getLogger(__name__)


class Target(StrEnum):
    churn = "churn"
    upgrade = "upgrade"
    reactivation = "reactivation"
    policy = "policy"
    all = "all"


class PromotableTarget(StrEnum):
    churn = "churn"
    upgrade = "upgrade"
    reactivation = "reactivation"
    policy = "policy"


class ScorableTarget(StrEnum):
    churn = "churn"
    upgrade = "upgrade"


def _folds_text(backtest: dict) -> str:
    n = int(backtest["roc_auc"]["n"])
    return f"{n} fold{'s' if n != 1 else ''}"


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


@contextlib.contextmanager
def training_steps(console: Console, total: int):
    """`step(message)` for the training job: a bar over the expected steps on a terminal (each message starts
    a step and closes the previous one; optional steps — tuning, the champion's refit — stretch the total),
    else a line per step with the elapsed time."""
    if not console.is_terminal:
        with step_lines(console, "training") as step:
            yield step
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("training", total=total)

        def bar_step(message: str) -> None:
            current = bar.tasks[0]
            done = current.completed + (1 if current.description != "training" else 0)
            bar.update(task, description=message, completed=done, total=max(current.total or 0, done + 1))

        yield bar_step


def train(
    data: DataDir,
    model: Annotated[Target, typer.Option("--model", help="Which model to train.")] = Target.all,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Train as if on this date.")] = None,
    horizon_days: Annotated[int | None, typer.Option("--horizon-days", min=1, help="Label horizon.")] = None,
    tune: Annotated[
        int, typer.Option("--tune", min=0, help="Random-search trials on the validation cutoff.")
    ] = 0,
    truth: Annotated[
        Path | None,
        typer.Option("--truth", help="Simulator truth directory (default: DATA/truth when present)."),
    ] = None,
    folds: Annotated[
        int | None,
        typer.Option(
            "--folds",
            min=1,
            help="Exactly this many backtest folds (default: as many as the history "
            "allows, up to training.backtest_folds, else a single time-based holdout).",
        ),
    ] = None,
    cadence: Annotated[
        str | None,
        typer.Option(
            "--cadence",
            help="Cutoff cadence: daily, weekly, monthly, a number of days, or auto "
            "(default: training.cutoff_cadence).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    decision_log: Annotated[
        str | None,
        typer.Option(
            "--decision-log",
            help="The policy also learns from what the service decided: this decision log's decisions (sqlite:///PATH "
            "or postgresql://…, with their logged propensities) join the campaign history, each contact once.",
        ),
    ] = None,
) -> None:
    """Train, backtest and register the churn/upgrade models and the policy (alias @challenger). Churn is
    always trained; upgrade when its labels have both classes; the policy when campaigns were logged."""
    quiet_third_party()
    from clm.settings import Settings
    from features.cutoffs import CutoffSpecError, parse_cadence
    from features.jobs import DataDirectoryError
    from training.dataset import NotEnoughHistory
    from training.train import summary_json, train_run

    settings = Settings()
    config = load_config(settings.config)
    targets = ["churn", "upgrade", "reactivation"] if model is Target.all else [model.value]
    with_policy = "policy" in targets or model is Target.all
    targets = [t for t in targets if t != "policy"]
    truth_dir = truth or (data / "truth" if (data / "truth").exists() else None)
    if cadence is not None and cadence.strip().lower() != "auto":
        try:
            cadence = parse_cadence(cadence)
        except CutoffSpecError as exc:
            raise typer.BadParameter(str(exc), param_hint="--cadence") from exc
    console = Console(stderr=True)
    planned_folds = folds or config.training.backtest_folds
    explicit_policy = model is Target.policy
    try:
        with training_steps(
            console, 1 + len(targets) * (planned_folds + 1) + (4 if with_policy else 0)
        ) as step:
            results, report = [], None
            if targets:
                report = train_run(
                    data, targets, config=config, project_root=Path.cwd(), as_of=date_option(as_of, "--as-of"),
                    horizon_days=horizon_days, truth_dir=truth_dir, tune_trials=tune, folds=folds, cadence=cadence,
                    progress=step,
                )  # fmt: skip
                results = report.results
            policy_result, policy_note = None, None
            if with_policy:
                from training.policy import NoCampaigns, train_policy

                try:
                    with contextlib.ExitStack() as history:
                        source = data
                        if decision_log is not None:  # the service's own decisions join the campaign history
                            source = history.enter_context(logged_history(data, decision_log))
                        policy_result = train_policy(
                            source, config=config, project_root=Path.cwd(), as_of=date_option(as_of, "--as-of"),
                            truth_dir=truth_dir, progress=step,
                        )  # fmt: skip
                except NoCampaigns as exc:
                    if explicit_policy:
                        raise
                    policy_note = (f"policy: not trained — {exc}; `clm score` decides with the action catalogue's "
                                   "prior effects ([actions.*] prior_delta_*) until campaigns are logged")  # fmt: skip
    except (DataDirectoryError, NotEnoughHistory, ValueError) as exc:
        typer.echo(f"clm train: {exc}", err=True)
        raise typer.Exit(2) from exc
    notes = list(report.notes) if report is not None else []
    if report is not None:
        notes += [f"{target}: not trained — {why}" for target, why in report.skipped.items()]
    if policy_note:
        notes.append(policy_note)
    if as_json:
        summary = json.loads(summary_json(results))
        if policy_result is not None:
            from training.policy import policy_summary

            summary.append(policy_summary(policy_result))
        if report is not None:
            summary.append({"target": "notes", "notes": notes, "skipped": report.skipped,
                            "cutoff_cadence": str(report.plan.cadence), "cutoffs": len(report.plan.cutoffs),
                            "first_cutoff_after_days": report.plan.lead_days})  # fmt: skip
        elif policy_note:
            summary.append({"target": "notes", "notes": notes})
        typer.echo(json.dumps(summary, default=float))
        return
    out = Console()
    for note in notes:
        out.print(note, markup=False, highlight=False)
    if policy_result is not None:
        from clm.commands.policy import print_trained_policy

        print_trained_policy(out, policy_result)
    for r in results:
        table = Table(
            title=f"{r.registered_name} v{r.version} @challenger — test cutoff {r.split.test} (run {r.run_id[:8]})"
        )
        for column in ("", "ROC AUC", "PR AUC", "Brier", "ECE", "top-decile lift", "recall@10%"):
            table.add_column(column, justify="left" if not column else "right")
        for who in ("model", "logistic", "recency_rule", "bgnbd", "oracle"):
            if who not in r.test_metrics:
                continue
            m = r.test_metrics[who]
            label = {"model": "LightGBM (calibrated)", "logistic": "logistic regression", "recency_rule": "recency rule",
                     "bgnbd": "BG/NBD P(no activity)", "oracle": "oracle (true probability)"}[who]  # fmt: skip
            table.add_row(
                label,
                *(
                    _fmt(m.get(k))
                    for k in ("roc_auc", "pr_auc", "brier", "ece", "top_decile_lift", "recall_at_top10")
                ),
            )
        out.print(table)
        model_metrics = r.test_metrics["model"]
        baselines = r.baseline_backtest or {}
        comparison = [f"model {_fmt(r.backtest['roc_auc']['mean'])}"] + [
            f"{name} {_fmt(baselines[name]['roc_auc']['mean'])}"
            for name in ("logistic", "recency_rule", "oracle")
            if name in baselines
        ]
        out.print(
            f"  evaluation: {r.evaluation}; mean ROC AUC over {_folds_text(r.backtest)}: {', '.join(comparison)}",
            markup=False, highlight=False,
        )  # fmt: skip
        extras = [f"backtest ROC AUC {r.backtest['roc_auc']['mean']:.3f} ± {_fmt(r.backtest['roc_auc']['std'])} over {_folds_text(r.backtest)}",
                  f"ECE {model_metrics['ece_before_calibration']:.3f} → {model_metrics['ece']:.3f} after calibration",
                  f"behaviour checks {'passed' if r.behaviour_passed else 'FAILED'}",
                  f"scoring cutoff {r.scoring_cutoff}"]  # fmt: skip
        if "auc_over_oracle_auc" in model_metrics:
            extras.insert(1, f"AUC ÷ oracle AUC {model_metrics['auc_over_oracle_auc']:.3f}")
        out.print("  " + "; ".join(extras))


def promote(
    model: Annotated[PromotableTarget, typer.Option("--model", help="Which model to promote.")],
) -> None:
    """Move @champion to @challenger if it is no worse on the same backtest and passed the behaviour checks."""
    from clm.settings import Settings
    from training import tracking
    from training.promote import PromotionError, promote_model

    settings = Settings()
    config = load_config(settings.config)
    tracking.configure(tracking.resolve_tracking_uri(Path.cwd()))
    name = config.models.registered_name(model.value)
    rules = config.models.policy if model.value == "policy" else config.training
    try:
        decision = promote_model(
            name, metric=rules.promotion_metric, tolerance=rules.promotion_tolerance,
            minimum=getattr(rules, "promotion_minimum", None),
        )  # fmt: skip
    except PromotionError as exc:
        typer.echo(f"clm promote: {exc}", err=True)
        raise typer.Exit(2) from exc
    verdict = "promoted to @champion" if decision.promote else "kept out (champion unchanged)"
    typer.echo(f"{name}: challenger {verdict}")
    for reason in decision.reasons:
        typer.echo(f"  - {reason}")
    if not decision.promote:
        raise typer.Exit(1)


def evaluate(
    model_version: Annotated[
        str, typer.Option("--model-version", help="Registered version number (or @alias).")
    ],
    data: Annotated[Path, typer.Option("--data", help="Canonical data directory to evaluate on.")],
    model: Annotated[
        ScorableTarget, typer.Option("--model", help="Which registered model.")
    ] = ScorableTarget.churn,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Evaluate a registered model version on the data's latest backtest folds."""
    import dataclasses

    from clm.settings import Settings
    from features.build import LabelParams
    from features.jobs import DataDirectoryError
    from models.bundle import load_bundle
    from models.population import in_population
    from models.registry import download_bundle
    from training import tracking
    from training.dataset import NotEnoughHistory, closed_cutoffs, describe_evaluation, evaluation_splits
    from training.train import evaluate_bundle_on_folds, target_population, training_frame

    settings = Settings()
    config = load_config(settings.config)
    tracking.configure(tracking.resolve_tracking_uri(Path.cwd()))
    name = config.models.registered_name(model.value)
    uri = (
        f"models:/{name}{model_version}"
        if model_version.startswith("@")
        else f"models:/{name}/{model_version}"
    )
    try:
        bundle = load_bundle(download_bundle(uri))
    except Exception as exc:
        typer.echo(f"clm evaluate: cannot load {uri}: {exc}", err=True)
        raise typer.Exit(2) from exc
    labels = LabelParams.from_config(config.labels, horizon_days=bundle.horizon_days)
    try:
        frame, _ = training_frame(data, config, dataclasses.replace(labels, keep_churned_users=True))
        population = bundle.metadata.get(
            "population", target_population(bundle.target, labels.keep_churned_users)
        )
        frame = frame[in_population(frame, population, bundle.horizon_days)]
        folds = evaluation_splits(
            closed_cutoffs(frame, bundle.target), bundle.horizon_days, config.training.backtest_folds
        )
    except (DataDirectoryError, NotEnoughHistory) as exc:
        typer.echo(f"clm evaluate: {exc}", err=True)
        raise typer.Exit(2) from exc
    result = evaluate_bundle_on_folds(bundle, frame, folds)
    if as_json:
        typer.echo(
            json.dumps(
                {"model": uri, "evaluation": describe_evaluation(folds), "backtest": result}, default=float
            )
        )
        return
    table = Table(
        title=f"{uri} on {data} — {describe_evaluation(folds)} over test cutoffs {', '.join(str(f.test) for f in folds)}"
    )
    for column in ("metric", "mean", "std", "min", "max", "folds"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric, values in result.items():
        table.add_row(
            metric, *(_fmt(values.get(k)) for k in ("mean", "std", "min", "max")), str(int(values["n"]))
        )
    Console().print(table)


def score(
    data: DataLocation,
    as_of: DecisionDate,
    out: Annotated[
        str, typer.Option("--out", help="Output file: .csv or .parquet (on Spark a dataset at any URI).")
    ],
    budget: Budget = None,
    explore: Annotated[
        bool,
        typer.Option(
            "--explore/--no-explore",
            help="Explore the configured share of decisions; each user's draw is a hash of (user, date, policy "
            "version, policy.exploration_salt), the same draw the API makes.",
        ),
    ] = True,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain/--no-explain",
            help="Add each model's top features and their reasons in English and Chinese (one TreeSHAP pass per "
            "model over everyone: the API's explanations, in bulk).",
        ),
    ] = False,
    engine: Engine = None,
    decision_log: HistoryLog = None,
) -> None:
    """Stage, churn and upgrade probability, CLV and the next best action for every user known before the
    date, with the @champion models and policy. Only the churn model is required: without an upgrade model
    the upgrade probability is blank, without a policy the catalogue's prior effects value the actions. Each
    action's cooldown, cap and suppression read the user's contact history per action (features.contacts)."""
    quiet_third_party()
    from clm.settings import Settings
    from training import tracking

    if Path(out).suffix.lower() not in (".csv", ".parquet"):
        raise typer.BadParameter("the output must end in .csv or .parquet", param_hint="--out")
    settings = Settings()
    if budget is not None and (engine or settings.engine) == "spark":
        raise typer.BadParameter(
            "a budget plans the whole population at once, in process: drop --engine spark",
            param_hint="--budget",
        )
    config = load_config(settings.config)
    tracking.configure(tracking.resolve_tracking_uri(Path.cwd()))
    day = date_option(as_of, "--as-of")
    assert day is not None
    with status_steps(Console(stderr=True), "loading the @champion models") as step:
        _score(data, out, day, settings, config, step, budget=budget, explore=explore, explain=explain,
               engine=engine, decision_log=decision_log)  # fmt: skip


def _score(
    data: str, out: str, day: dt.date, settings: Any, config: Any, step: Step, *, budget: float | None,
    explore: bool, explain: bool, engine: Any, decision_log: str | None = None,
) -> None:  # fmt: skip
    """The work of `clm score`, reporting each step to `step`."""
    from features.jobs import DataDirectoryError, latest_features
    from models.batch import decision_table
    from models.decision import ModelsMissing, load_decision_models

    try:
        models = load_decision_models(config, aliases=("champion",), optional=("upgrade", "policy"))
    except ModelsMissing as exc:
        typer.echo(f"clm score: {exc} (and `clm promote` to make it @champion)", err=True)
        raise typer.Exit(2) from exc
    con = engine_connection(settings, engine, "clm score")
    step(
        f"scoring on Spark as of {day}" if con is not None else f"building every user's features as of {day}"
    )
    try:
        with logged_history(Path(data), decision_log) as source:
            if con is not None:
                _score_on_spark(con, str(source) if decision_log is not None else data, out, models, day, config,
                                explore=explore, explain=explain)  # fmt: skip
                return
            frame, _ = latest_features(source if decision_log is not None else data, params=feature_params(config), as_of=day,
                                       contacts=contact_params(config, models))  # fmt: skip
    except (DataDirectoryError, ValueError) as exc:
        typer.echo(f"clm score: {exc}", err=True)
        raise typer.Exit(2) from exc
    for note in models.missing_notes():
        typer.echo(note)
    step(f"deciding for {len(frame):,} users" + (" (with explanations)" if explain else ""))
    result, decided = decision_table(
        frame, models, as_of=day, explore=explore, budget=budget, budget_method=config.policy.budget_method,
        explain_top_k=config.serving.explain_top_k if explain else None,
    )  # fmt: skip
    step(f"writing {out}")
    if decided.plan is not None:
        plan = decided.plan
        typer.echo(
            f"budget {budget:,.2f}: {plan.contacts:,} contacts, cost {plan.total_cost:,.2f}, expected value "
            f"{plan.total_value:,.2f} (unconstrained: {plan.unconstrained_contacts:,} contacts, cost "
            f"{plan.unconstrained_cost:,.2f}, value {plan.unconstrained_value:,.2f})"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        result.to_csv(out, index=False)
    else:
        result.to_parquet(out, index=False)
    contacted = int((result["action"] != "no_action").sum())
    typer.echo(
        f"scored {len(result):,} users as of {day} into {out}: {contacted:,} to contact, expected value "
        f"{result['expected_value'].sum():,.2f} ({models.described(models.policy)})"
    )


def _score_on_spark(
    con: Any, data: str, out: str, models: Any, day: dt.date, config: Any, *, explore: bool, explain: bool
) -> None:
    """`clm score --engine spark`: the same decision table, computed per partition by Spark and written by it."""
    from features.jobs import DataDirectoryError
    from models.spark_scoring import score_on_spark

    for note in models.missing_notes():
        typer.echo(note)
    try:
        summary = score_on_spark(
            con, data, out, models, as_of=day, params=feature_params(config), explore=explore,
            explain_top_k=config.serving.explain_top_k if explain else None, contacts=contact_params(config, models),
        )  # fmt: skip
    except (DataDirectoryError, ValueError) as exc:
        typer.echo(f"clm score: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"scored {summary.users:,} users as of {day} on Spark into {out}: {summary.contacted:,} to contact, "
        f"expected value {summary.expected_value:,.2f} ({models.described(models.policy)})"
    )
