"""The training job: build features and labels at cutoffs that fit the history (cadence and first cutoff
from the history's length, the horizon and the feature windows), evaluate on as many backtest folds as the
history allows (down to a single time-based holdout), fit the final model on the latest split, compare it
with the baselines (and the oracle on simulated data), log everything to MLflow and register a new version
with the alias `challenger`. Churn is always trained; upgrade only when its labels have both classes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.build import LabelParams
from features.jobs import DataDirectoryError, build_feature_tables, connect, load_inputs
from features.registry import PLAN_CHANGE_WINDOW_DAYS, FeatureParams, build_registry, registry_version
from models import plots
from models.behaviour import BehaviourReport, behaviour_report
from models.bundle import ModelBundle, bundle_from_model, load_bundle, save_bundle
from models.config import ModelsConfig, TrainingSection
from models.frame import model_matrix
from models.metrics import classification_metrics, summarize_folds
from models.population import ALL_USERS, CHURN_POPULATION, REACTIVATION_POPULATION, in_population
from models.pyfunc_code import SCORING_MODEL_FILE
from models.registry import download_bundle
from models.scoring import contributions, score
from training import tracking
from training.btyd import summaries_of
from training.dataset import (
    CutoffPlan,
    NotEnoughHistory,
    Split,
    closed_cutoffs,
    describe_evaluation,
    evaluation_splits,
    load_training_frame,
    plan_cutoffs,
)
from training.fit import FoldResult, ModelSpec, fit_fold, rows_for
from training.model_card import render_model_card
from training.truth import latent_stages, read_truth, truth_oracle

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
# A target is trained only when its closed labels hold at least this many of each class (churn must be).
MIN_LABELS_PER_CLASS = 20


@dataclass
class TrainedTarget:
    target: str
    registered_name: str
    version: str
    run_id: str
    test_metrics: dict[str, dict[str, float]]
    backtest: dict[str, dict[str, float]]
    behaviour_passed: bool
    split: Split
    scoring_cutoff: dt.date
    evaluation: str = ""  # "3-fold backtest", "single time-based holdout"
    folds_used: int = 0
    baseline_backtest: dict[str, dict[str, dict[str, float]]] | None = None


# What a run logs as metrics (the full figures, every fold statistic of every scorer, go to the artifact
# metrics/metrics.json): the model's test figures, the quality figures of the baselines beside it, the
# backtest's mean (± std of the quality figures) and the baselines' backtest means.
QUALITY_METRICS = ("roc_auc", "pr_auc", "brier", "ece", "top_decile_lift", "recall_at_top10")
# fitted parameters of the BG/NBD baseline: what it believed about the users, beside its AUC
BGNBD_PARAMS = ("param_r", "param_alpha", "param_a", "param_b")
METRICS_ARTIFACT = "metrics/metrics.json"
# what each target's registered model is, for the registry's model description
TARGET_MEANING = {
    "churn": "the calibrated probability that a user churns within the horizon (alive users)",
    "upgrade": "the calibrated probability that a user upgrades within the horizon",
    "reactivation": "the calibrated probability that a lapsed user returns within the horizon",
}


def _fold_summary(
    summary: dict[str, dict[str, float]], means: Sequence[str] | None, stds: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Of a backtest summary, the mean of `means` (None: every metric) and the std of `stds`."""
    return {
        name: {"mean": values["mean"]} | ({"std": values["std"]} if name in stds else {})
        for name, values in summary.items()
        if means is None or name in means
    }


def run_metrics(
    test: dict[str, dict[str, float]],
    backtest: dict[str, dict[str, float]],
    baseline_backtest: dict[str, dict[str, dict[str, float]]],
    champion_backtest: dict[str, dict[str, float]] | None,
    folds: int,
    behaviour_passed: bool,
) -> dict[str, Any]:
    """The metrics a model run logs, nested (`tracking.log_metrics_flat` dots them): `test.model.*` (every
    figure of the model on the test cutoff), `test.<baseline>.<quality>` (BG/NBD's fitted parameters too),
    `backtest.<metric>.mean` and `backtest.<quality>.std`, `backtest_baselines.<baseline>.<quality>.mean` and
    their ROC AUC's std, `champion_backtest.<quality>.mean` (what promotion compares), `backtest_folds` and
    `behaviour_passed`. The uncalibrated model's figures, fold counts (`*.n`), minima and maxima stay in
    the metrics artifact."""
    tests: dict[str, dict[str, float]] = {"model": dict(test["model"])}
    for who, values in test.items():
        if who not in ("model", "model_uncalibrated"):
            keep = QUALITY_METRICS + (BGNBD_PARAMS if who == "bgnbd" else ())
            tests[who] = {name: values[name] for name in keep if name in values}
    metrics: dict[str, Any] = {
        "test": tests,
        "backtest": _fold_summary(backtest, None, QUALITY_METRICS),
        "backtest_baselines": {
            who: _fold_summary(summary, QUALITY_METRICS, ("roc_auc",))
            for who, summary in baseline_backtest.items()
        },
        "backtest_folds": float(folds),
        "behaviour_passed": float(behaviour_passed),
    }
    if champion_backtest is not None:
        metrics["champion_backtest"] = _fold_summary(champion_backtest, QUALITY_METRICS, ())
    return metrics


def run_description(
    spec: ModelSpec, fit: TargetFit, *, rows: int, population: str, source: str, scoring_cutoff: dt.date
) -> str:
    """What the run trained, on what, and its headline figures: the run's and the registered version's
    description in the MLflow UI."""
    final, backtest, baselines = fit.final, fit.backtest, fit.baseline_backtest
    train = final.split.train
    comparison = ", ".join(
        f"{who} {baselines[who]['roc_auc']['mean']:.3f}" for who in ("logistic", "recency_rule", "oracle")
        if who in baselines
    )  # fmt: skip
    text = (
        f"{spec.registered_name}: LightGBM with isotonic calibration, P({spec.target} within "
        f"{fit.bundle.horizon_days} days) for the {population} population. Trained on {source or 'the data'}: "
        f"{rows:,} labelled rows at {len(train)} training cutoffs {train[0]}..{train[-1]} (validation {final.split.valid}, "
        f"test {final.split.test}); features {fit.feature_version}; meant for scoring at {scoring_cutoff}. "
        f"{fit.evaluation}: ROC AUC {backtest['roc_auc']['mean']:.3f}"
    )
    std = backtest["roc_auc"].get("std", math.nan)
    text += f" ± {std:.3f}" if math.isfinite(std) else ""
    text += f" (baselines: {comparison})." if comparison else "."
    ratio = final.metrics["model"].get("auc_over_oracle_auc")
    if ratio is not None:
        text += f" Test AUC ÷ oracle AUC {ratio:.2f}."
    return text + f" Behaviour checks {'passed' if fit.behaviour.passed else 'FAILED'}."


def evaluate_bundle_on_folds(
    bundle: ModelBundle, frame: pd.DataFrame, folds: Sequence[Split]
) -> dict[str, dict[str, float]]:
    """Another model (e.g. the champion) scored on the same test cutoffs, summarised like the backtest."""
    per_fold = []
    for split in folds:
        rows = frame[(frame["cutoff"] == split.test) & frame[bundle.target].notna()]
        p = score(rows, bundle)["probability"].to_numpy()
        per_fold.append(classification_metrics(rows[bundle.target].astype(float).to_numpy(), p))
    return summarize_folds(per_fold)


@dataclass(frozen=True)
class TargetFit:
    """One target fitted and checked over its frame, before anything is logged: the backtest folds, the
    final fold's model as a bundle, the baselines' backtest and the behaviour checks."""

    folds: list[Split]
    results: list[FoldResult]
    best_params: dict[str, Any]
    backtest: dict[str, dict[str, float]]
    baseline_backtest: dict[str, dict[str, dict[str, float]]]
    feature_version: str
    bundle: ModelBundle
    behaviour: BehaviourReport

    @property
    def final(self) -> FoldResult:
        return self.results[-1]

    @property
    def evaluation(self) -> str:
        return describe_evaluation(self.folds)


def baseline_backtests(results: Sequence[FoldResult]) -> dict[str, dict[str, dict[str, float]]]:
    """The baselines (and the oracle, on simulated data) summarised over the folds that all have them."""
    return {
        name: summarize_folds([r.metrics[name] for r in results])
        for name in ("logistic", "recency_rule", "bgnbd", "oracle")
        if all(name in r.metrics for r in results)
    }  # fmt: skip


def fit_target(
    frame: pd.DataFrame,
    spec: ModelSpec,
    *,
    registry: Sequence[Any],
    horizon_days: int,
    scoring_cutoff: dt.date,
    training: TrainingSection,
    truth: pd.DataFrame | None,
    progress: Progress,
    tune_trials: int = 0,
    folds: int | None = None,
    exact_folds: bool = False,
    transactions: str = "any",
    bgnbd_population: pd.DataFrame | None = None,
    population: str = CHURN_POPULATION,
) -> TargetFit:
    """The pure steps over a frame: split into backtest folds (as many as the cutoffs allow up to `folds`,
    else a single time-based holdout; exactly `folds` with `exact_folds`), tune (optionally), fit and
    calibrate each fold against its baselines, bundle the final fold's model and run the behaviour checks."""
    seed = training.seed
    wanted = folds if folds is not None else training.backtest_folds
    folds = evaluation_splits(closed_cutoffs(frame, spec.target), horizon_days, wanted, exact=exact_folds)
    oracle = truth_oracle(truth, spec.target)
    best_params: dict[str, Any] = {}
    if tune_trials:
        from training.tuning import tune

        progress(f"{spec.target}: tuning {tune_trials} trials on the validation cutoff")
        best_params = tune(frame, folds[-1], spec, registry, trials=tune_trials, seed=seed)
    results: list[FoldResult] = []
    for i, split in enumerate(folds):
        progress(f"{spec.target}: fold {i + 1}/{len(folds)} — {split.describe()}")
        results.append(
            fit_fold(frame, split, spec, registry, seed=seed, oracle=oracle, with_slices=i == len(folds) - 1,
                     params_override=best_params, horizon_days=horizon_days, transactions=transactions,
                     bgnbd_population=bgnbd_population)
        )  # fmt: skip
    final = results[-1]
    feature_version = registry_version(registry)
    bundle = bundle_from_model(
        final.model, name=spec.registered_name, target=spec.target, feature_version=feature_version,
        horizon_days=horizon_days,
        metadata={"recipe_params": {**spec.params, **best_params},
                  "train_cutoffs": [str(c) for c in final.split.train], "valid_cutoff": str(final.split.valid),
                  "test_cutoff": str(final.split.test), "scoring_cutoff": str(scoring_cutoff),
                  "population": population},
    )  # fmt: skip
    return TargetFit(
        folds=folds,
        results=results,
        best_params=best_params,
        backtest=summarize_folds([r.metrics["model"] for r in results]),
        baseline_backtest=baseline_backtests(results),
        feature_version=feature_version,
        bundle=bundle,
        behaviour=behaviour_report(bundle, final.test_frame, seed=seed),
    )


def refit_recipe_on_folds(
    frame: pd.DataFrame, folds: Sequence[Split], spec: ModelSpec, registry: Sequence[Any], recipe: dict[str, Any],
    seed: int,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Another recipe (the champion's parameters) refitted on exactly these folds, summarised like the
    backtest: recipes are compared, not artefacts trained on other cutoffs."""
    return summarize_folds(
        [
            fit_fold(frame, split, spec, registry, seed=seed, params_override=recipe).metrics["model"]
            for split in folds
        ]
    )


def champion_backtest_of(
    frame: pd.DataFrame,
    fit: TargetFit,
    spec: ModelSpec,
    registry: Sequence[Any],
    seed: int,
    progress: Progress,
) -> dict[str, dict[str, float]] | None:
    """The registered champion's recipe on this backtest, or None when there is none (or it cannot be
    refitted here: reported, not fatal). Reads the registry."""
    champion = tracking.version_by_alias(spec.registered_name, "champion")
    if champion is None:
        return None
    # Compare recipes, not artefacts: the champion's final model was trained on cutoffs that are test
    # cutoffs of this backtest, so it is refitted with its own parameters on exactly these folds.
    try:
        champion_bundle = load_bundle(download_bundle(champion.model_uri))
        recipe = champion_bundle.metadata.get("recipe_params", {})
        progress(f"{spec.target}: refitting champion v{champion.version}'s recipe on the same folds")
        return refit_recipe_on_folds(frame, fit.folds, spec, registry, recipe, seed)
    except Exception as exc:  # a champion that cannot be refitted here is reported, not fatal
        log.warning(
            "could not evaluate champion %s v%s on this backtest: %s", champion.name, champion.version, exc
        )
        return None


def train_target(
    frame: pd.DataFrame,
    spec: ModelSpec,
    *,
    params: FeatureParams,
    horizon_days: int,
    scoring_cutoff: dt.date,
    config: ModelsConfig,
    truth: pd.DataFrame | None,
    progress: Progress,
    tune_trials: int = 0,
    folds: int | None = None,
    exact_folds: bool = False,
    plan: CutoffPlan | None = None,
    bgnbd_population: pd.DataFrame | None = None,
    population: str = CHURN_POPULATION,
    source: str = "",
) -> TrainedTarget:
    """The thin job for one target: the pure fit, the champion's comparison, then MLflow logging and
    registration of the new version as @challenger. `source` names the data in the run's description."""
    registry = build_registry(params)
    training = config.training
    seed = training.seed
    fit = fit_target(
        frame, spec, registry=registry, horizon_days=horizon_days, scoring_cutoff=scoring_cutoff, training=training,
        truth=truth, progress=progress, tune_trials=tune_trials, folds=folds, exact_folds=exact_folds,
        transactions=config.labels.non_contractual_activity, bgnbd_population=bgnbd_population,
        population=population,
    )  # fmt: skip
    champion_backtest = champion_backtest_of(frame, fit, spec, registry, seed, progress)
    final, results, bundle, behaviour = fit.final, fit.results, fit.bundle, fit.behaviour
    backtest, baseline_backtest, feature_version, best_params = (
        fit.backtest, fit.baseline_backtest, fit.feature_version, fit.best_params,
    )  # fmt: skip

    progress(f"{spec.target}: logging to MLflow")
    run_params = {
        "target": spec.target,
        "horizon_days": horizon_days,
        "feature_version": feature_version,
        "scoring_cutoff": str(scoring_cutoff),
        "population": population,
        "split": {
            "train": [str(c) for c in final.split.train],
            "valid": str(final.split.valid),
            "test": str(final.split.test),
        },
        "backtest_tests": [str(f.split.test) for f in results],
        "evaluation": fit.evaluation,
        "backtest_folds_used": len(results),
        "lightgbm": {k: v for k, v in final.model.params_.items() if k != "monotone_constraints"},
    }
    if best_params:
        run_params["tuned"] = best_params
    if plan is not None:
        run_params["cutoffs"] = {
            "cadence": str(plan.cadence), "first_cutoff_after_days": plan.lead_days, "count": len(plan.cutoffs),
            "first": str(plan.cutoffs[0]), "last": str(plan.cutoffs[-1]), "why": plan.chosen_because,
        }  # fmt: skip
    train_rows = len(rows_for(frame, final.split.train, spec.target))
    description = run_description(spec, fit, rows=train_rows, population=population, source=source,
                                  scoring_cutoff=scoring_cutoff)  # fmt: skip
    with tracking.start_training_run(
        training.experiment, f"{spec.target}-{scoring_cutoff}", params=run_params,
        tags={"clm.target": spec.target, "clm.scoring_cutoff": str(scoring_cutoff), "clm.evaluation": fit.evaluation},
        description=description,
    ) as run:  # fmt: skip
        tracking.log_metrics_flat(
            run_metrics(
                final.metrics, backtest, baseline_backtest, champion_backtest, len(results), behaviour.passed
            )
        )
        tracking.log_dict({"test": final.metrics, "backtest": backtest, "backtest_baselines": baseline_backtest,
                           "champion_backtest": champion_backtest}, METRICS_ARTIFACT)  # fmt: skip
        tracking.log_text(behaviour.text(), "behaviour.txt")
        tracking.log_config(config)
        _log_plots(final, bundle, registry, training.shap_sample_rows, seed)
        if final.slices is not None:
            tracking.log_frame(final.slices, "metrics/slices.csv")
        card = render_model_card(
            _card(spec, final, results, backtest, baseline_backtest, champion_backtest, behaviour, feature_version,
                  horizon_days, scoring_cutoff, evaluation=_evaluation_text(fit.evaluation, results, plan))
        )  # fmt: skip
        tracking.log_text(card, "model_card.md")
        registered = register_bundle(
            bundle, final.test_frame.head(5),
            tags={"clm.target": spec.target, "clm.feature_version": feature_version,
                  "clm.behaviour_passed": str(behaviour.passed), "clm.scoring_cutoff": str(scoring_cutoff)},
            description=description,
        )  # fmt: skip
    return TrainedTarget(
        target=spec.target,
        registered_name=spec.registered_name,
        version=str(registered.version),
        run_id=run.info.run_id,
        test_metrics=final.metrics,
        backtest=backtest,
        behaviour_passed=behaviour.passed,
        split=final.split,
        scoring_cutoff=scoring_cutoff,
        evaluation=fit.evaluation,
        folds_used=len(results),
        baseline_backtest=baseline_backtest,
    )


def _evaluation_text(evaluation: str, results: Sequence[FoldResult], plan: CutoffPlan | None) -> str:
    """What the metrics come from, for the model card."""
    tests = ", ".join(str(r.split.test) for r in results)
    text = f"{evaluation} (test cutoff{'s' if len(results) > 1 else ''} {tests}); every backtest figure is over {len(results)} fold(s)"
    if results and results[-1].split.holdout:
        text += (
            "; the validation cutoff's label window overlaps the training ones, the test cutoff's does not"
        )
    if plan is not None:
        text += f". Cutoffs: {plan.describe()}"
    return text


def register_bundle(
    bundle: ModelBundle, sample: pd.DataFrame, *, tags: dict[str, str], alias: str = "challenger",
    description: str | None = None,
) -> tracking.RegisteredVersion:  # fmt: skip
    """Log the bundle as a pyfunc in the active run (signature from the bundle, `sample` as the input
    example) and register it as a new version of `bundle.name` with `alias` and `description`."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = save_bundle(bundle, Path(tmp) / "bundle")
        example = model_matrix(sample, bundle.feature_names, bundle.categories)
        # the API sends categoricals as plain strings; the signature says so
        example = example.astype({name: "object" for name in bundle.categories})
        return tracking.log_and_register_model(
            name="model", python_model=SCORING_MODEL_FILE, artifacts={"bundle": str(bundle_dir)},
            signature=model_signature(bundle), input_example=example, registered_model_name=bundle.name,
            alias=alias, tags=tags, version_description=description,
            model_description=(f"{bundle.name}: {TARGET_MEANING.get(bundle.target, bundle.target)}, from a LightGBM "
                               "booster and an isotonic calibrator (the `bundle` artifact). Versions are registered "
                               "@challenger by `clm train`; `clm promote` moves @champion, which serving reads."),
        )  # fmt: skip


def model_signature(bundle: ModelBundle):
    """Every registry feature, optional (partial vectors are allowed: missing means missing), numbers as
    double and categoricals as string; the output is the calibrated probability and the raw score."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema(
        [
            ColSpec("string" if name in bundle.categories else "double", name, required=False)
            for name in bundle.feature_names
        ]
    )
    outputs = Schema(
        [ColSpec("double", "probability"), ColSpec("double", "uncalibrated"), ColSpec("double", "raw_score")]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def _log_plots(final: FoldResult, bundle: ModelBundle, registry, sample_rows: int, seed: int) -> None:
    y = final.test_frame[bundle.target].astype(float).to_numpy()
    tracking.log_figure_png(
        plots.calibration_figure(y, final.test_uncalibrated, final.test_probability), "plots/calibration.png"
    )
    tracking.log_figure_png(
        plots.lift_figure(y, {"lightgbm": final.test_probability, **final.baseline_scores}), "plots/lift.png"
    )
    rows = final.test_frame.sample(min(sample_rows, len(final.test_frame)), random_state=seed)
    contrib = contributions(rows, bundle)[:, :-1]
    matrix = model_matrix(rows, bundle.feature_names, bundle.categories)
    tracking.log_figure_png(plots.shap_beeswarm_figure(contrib, matrix), "plots/shap_beeswarm.png")
    for name, figure in plots.shap_dependence_figures(contrib, matrix, top_k=3).items():
        tracking.log_figure_png(figure, f"plots/shap_dependence_{name}.png")
    gains = bundle.booster.feature_importance(importance_type="gain")
    tracking.log_figure_png(
        plots.importance_figure(bundle.feature_names, gains), "plots/feature_importance.png"
    )
    importance = pd.DataFrame({"feature": bundle.feature_names, "gain": gains}).sort_values(
        "gain", ascending=False
    )
    tracking.log_frame(importance, "metrics/feature_importance.csv")


def _card(spec, final, results, backtest, baseline_backtest, champion_backtest, behaviour, feature_version,
          horizon_days, scoring_cutoff, evaluation: str = "") -> dict[str, Any]:  # fmt: skip
    train_rows = final.test_frame  # for positive rate on test
    gains = final.model.booster_.feature_importance(importance_type="gain")
    top = sorted(zip(final.model.feature_names, gains, strict=True), key=lambda kv: -kv[1])[:10]
    limitations = [
        "Features are computed at cutoffs; behaviour between cutoffs is only seen at the next one.",
        "Calibration is fitted on a single validation cutoff; drift after it is not corrected.",
    ]
    return {
        "name": spec.registered_name,
        "target": spec.target,
        "horizon_days": horizon_days,
        "feature_version": feature_version,
        "scoring_cutoff": str(scoring_cutoff),
        "train_cutoffs": [str(c) for c in final.split.train],
        "valid_cutoff": str(final.split.valid),
        "test_cutoff": str(final.split.test),
        "test_rows": len(train_rows),
        "test_positive_rate": float(train_rows[spec.target].astype(float).mean()),
        "test_metrics": final.metrics,
        "backtest": backtest,
        "baseline_backtest": baseline_backtest,
        "champion_backtest": champion_backtest,
        "behaviour": behaviour.text(),
        "slices": final.slices,
        "top_features": top,
        "limitations": limitations,
        "folds": [str(r.split.test) for r in results],
        "evaluation": evaluation,
    }


def history_lead_days(params: FeatureParams, event_types: Sequence[str]) -> tuple[int, str]:
    """How much history the first cutoff needs: the longest window a feature reads that the data can fill —
    the trailing windows, the trend's two halves, and the plan-change window only when plan changes occur."""
    needs = {f"features over {max(params.windows_days)} days": max(params.windows_days),
             f"the {params.trend_window_days}-day trend against the {params.trend_window_days} days before": 2 * params.trend_window_days}  # fmt: skip
    if set(params.plan_change_event_types) & set(event_types):
        needs[f"plan changes over {PLAN_CHANGE_WINDOW_DAYS} days"] = PLAN_CHANGE_WINDOW_DAYS
    reason, days = max(needs.items(), key=lambda kv: kv[1])
    return days, f"the longest feature window: {reason}"


@dataclass(frozen=True)
class TrainingData:
    """The training frame (features joined to labels at the planned cutoffs), the data's end (the cutoff
    the models are meant for), the cutoff plan and what the output should say about the data."""

    frame: pd.DataFrame
    data_end: dt.date
    plan: CutoffPlan
    notes: list[str]


def training_data(
    data_dir: Path,
    config: ModelsConfig,
    labels: LabelParams,
    *,
    as_of: dt.date | None = None,
    cadence: str | int | None = None,
    folds: int | None = None,
    exact_folds: bool = False,
    progress: Progress = lambda message: None,
) -> TrainingData:
    """Features joined to labels at the cutoffs `plan_cutoffs` chooses from the history (from the first
    event up to the data's end or `as_of`), with the plan and notes about the data."""
    training = config.training
    con = connect()
    inputs = load_inputs(con, data_dir, as_of)
    first_event = con.to_pyarrow(inputs.events.ts.min()).as_py()
    if first_event is None:
        # only an as-of date can leave no events (load_inputs refuses a directory without any): name both
        # dates so the user sees how far to move it
        data_start = con.to_pyarrow(load_inputs(con, data_dir).events.ts.min()).as_py()
        raise DataDirectoryError(
            f"{data_dir}: no events before the as-of date {as_of}; the first event is on {data_start.date()}"
        )
    params = FeatureParams.from_config(config.features)
    event_types = con.to_pyarrow(inputs.events.select("event_type").distinct()).column(0).to_pylist()
    configured_lead = training.first_cutoff_after_days
    if configured_lead == "auto":
        lead_days, lead_reason = history_lead_days(params, event_types)
    else:
        lead_days, lead_reason = int(configured_lead), "training.first_cutoff_after_days"
    plan = plan_cutoffs(
        first_event.date(), inputs.data_end, horizon_days=labels.horizon_days, lead_days=lead_days,
        lead_reason=lead_reason, cadence=cadence if cadence is not None else training.cutoff_cadence,
        folds=folds if folds is not None else training.backtest_folds, exact_folds=exact_folds,
    )  # fmt: skip
    notes = [f"cutoffs: {plan.describe()}"]
    notes += _start_notes(con, inputs)
    progress(
        f"building features and labels at {len(plan.cutoffs)} cutoffs ({plan.cutoffs[0]}..{plan.cutoffs[-1]})"
    )
    with tempfile.TemporaryDirectory(prefix="clm-train-") as tmp:
        summary = build_feature_tables(data_dir, plan.cutoffs, Path(tmp), params=params, label_params=labels,
                                       as_of=as_of, con=con)  # fmt: skip
        frame = load_training_frame(summary.features_path, summary.labels_path)
    return TrainingData(frame, inputs.data_end, plan, notes)


def _start_notes(con: Any, inputs: Any) -> list[str]:
    """How users' start dates are known: signup dates, or their first event where there is none."""
    if inputs.users is None:
        return ["no users input: every user begins at their first event"]
    missing = int(con.to_pyarrow(inputs.users.signup_ts.isnull().sum()).as_py() or 0)
    if missing:
        return [f"{missing:,} users have no signup_ts: they begin at their first event"]
    return []


def training_frame(
    data_dir: Path,
    config: ModelsConfig,
    labels: LabelParams,
    *,
    as_of: dt.date | None = None,
    progress: Progress = lambda message: None,
) -> tuple[pd.DataFrame, dt.date]:
    """The training frame and the data's end (see `training_data`)."""
    data = training_data(data_dir, config, labels, as_of=as_of, progress=progress)
    return data.frame, data.data_end


@dataclass
class TrainingReport:
    """What `clm train` did for the scoring models: one result per trained target, the cutoff plan, notes
    about the data and the targets left out with the reason."""

    results: list[TrainedTarget]
    plan: CutoffPlan
    notes: list[str]
    skipped: dict[str, str]


def label_counts(frame: pd.DataFrame, target: str) -> tuple[int, int]:
    """Negative and positive closed labels of a target in the frame."""
    known = frame[target].dropna().astype(bool)
    return int((~known).sum()), int(known.sum())


def train_run(
    data_dir: Path,
    targets: Sequence[str],
    *,
    config: ModelsConfig,
    project_root: Path,
    as_of: dt.date | None = None,
    horizon_days: int | None = None,
    truth_dir: Path | None = None,
    tune_trials: int = 0,
    folds: int | None = None,
    cadence: str | int | None = None,
    progress: Progress = lambda message: None,
) -> TrainingReport:
    """Everything `clm train` does for the scoring models. `folds` asks for exactly that many backtest
    folds (otherwise as many as the history allows, up to the config's); churn must have both label
    classes, other targets are left out (and say why) when theirs do not."""
    params = FeatureParams.from_config(config.features)
    labels = LabelParams.from_config(config.labels, horizon_days=horizon_days)
    horizon = labels.horizon_days
    tracking.configure(tracking.resolve_tracking_uri(project_root))
    # features for every user (lapsed ones included); each target then trains on its population
    every_user = dataclasses.replace(labels, keep_churned_users=True)
    data = training_data(data_dir, config, every_user, as_of=as_of, cadence=cadence, folds=folds,
                         exact_folds=folds is not None, progress=progress)  # fmt: skip
    frame = data.frame
    truth = read_truth(truth_dir)
    stages = latent_stages(truth)
    if stages is not None:
        frame = frame.merge(stages, on=["user_id", "cutoff"], how="left")
    everyone = None
    if "churn" in targets:
        progress("churn: summarising every user's transactions for the BG/NBD baseline")
        # the frame already holds every user at the training cutoffs: no second feature build
        everyone = summaries_of(frame, config.labels.non_contractual_activity)
    results, skipped = [], {}
    for target in targets:
        population = target_population(target, labels.keep_churned_users)
        rows = frame[in_population(frame, population, horizon)].reset_index(drop=True)
        progress(f"{target}: {len(rows):,} rows of the {population} population")
        negatives, positives = label_counts(rows, target)
        if min(negatives, positives) < MIN_LABELS_PER_CLASS:
            why = (f"{positives:,} positive and {negatives:,} negative closed labels at the training cutoffs "
                   f"(at least {MIN_LABELS_PER_CLASS} of each are needed)")  # fmt: skip
            if target == "churn" or len(targets) == 1:
                raise NotEnoughHistory(f"{target}: {why}")
            skipped[target] = why
            progress(f"{target}: left out — {why}")
            continue
        spec = ModelSpec.from_config(target, config.models.propensity(target))
        results.append(
            train_target(rows, spec, params=params, horizon_days=horizon, scoring_cutoff=data.data_end,
                         config=config, truth=truth, progress=progress, tune_trials=tune_trials, folds=folds,
                         exact_folds=folds is not None, plan=data.plan, population=population,
                         bgnbd_population=everyone if target == "churn" else None, source=str(data_dir))
        )  # fmt: skip
    return TrainingReport(results, data.plan, data.notes, skipped)


def train(data_dir: Path, targets: Sequence[str], **options: Any) -> list[TrainedTarget]:
    """The trained targets of `train_run` (the demo's and the tests' entry point); the same options."""
    return train_run(data_dir, targets, **options).results


def target_population(target: str, keep_churned_users: bool) -> str:
    """The users a target's model trains on and scores (models.population)."""
    if target == "reactivation":
        return REACTIVATION_POPULATION
    return ALL_USERS if keep_churned_users else CHURN_POPULATION


def summary_json(results: Sequence[TrainedTarget]) -> str:
    return json.dumps(
        [
            {
                "target": r.target, "model": r.registered_name, "version": r.version, "run_id": r.run_id,
                "test": r.test_metrics, "backtest": r.backtest, "behaviour_passed": r.behaviour_passed,
                "scoring_cutoff": str(r.scoring_cutoff), "evaluation": r.evaluation,
                "backtest_folds": r.folds_used,
                "backtest_baselines": r.baseline_backtest,
            }
            for r in results
        ],
        default=float,
    )  # fmt: skip
