"""The campaign report (`clm report`): one self-contained HTML page for a batch scoring run — the stage mix
and the flows between stages, the actions chosen and what they cost within an optional budget, the score
distributions, the models' global drivers, their calibration on the latest closed horizon, and the
policy's evaluation against the simulator's truth when there is one.

`gather_report_inputs` is the I/O edge (it reads the data directory and runs the policy evaluation);
`build_report` is pure: frames, bundles and the evaluation in, a `ReportData` of frames and inline figures
out; `render_report` turns that into HTML with Jinja2. The page references nothing outside itself — the
CSS is inline, the figures are inline SVG (the SHAP beeswarm an embedded PNG) and a Content-Security-Policy
forbids any fetch — so it opens from a file with no server and no network."""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.build import LabelParams
from features.jobs import DataDirectoryError, connect, feature_history, load_inputs
from features.registry import FeatureParams, build_registry
from models.catalog import NO_ACTION, contact_params
from models.config import ModelsConfig
from models.decision import DecisionModels, Scores, decide_population
from models.metrics import MIN_RELIABLE_BIN_USERS, classification_metrics, reliability_table
from models.overview import (
    action_mix,
    contacted_by_stage,
    flow_matrix,
    global_drivers,
    stage_counts,
    stage_flows,
)
from models.plots import (
    action_mix_figure,
    calibration_figure,
    figure_png_data_uri,
    figure_svg,
    lift_figure,
    score_distribution_figure,
    shap_beeswarm_figure,
    stage_share_figure,
)
from models.policy import OUTCOME_OF
from models.population import ALL_USERS, in_population
from models.scoring import score
from models.snapshot import snapshot_age
from training.evaluate_policy import (
    POLICY_LABELS,
    PolicyEvaluation,
    evaluate_policy,
    evaluation_findings,
    policy_table,
)
from training.report_monitor import MonitorInputs, monitor_and_analytics, monitor_tables
from training.truth import read_effects

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

TITLE = "clm campaign report"
PREVIOUS_STAGE_CUTOFFS = 3
TOP_DRIVERS = 10
BEESWARM_FEATURES = 15
NO_TRUTH_NOTE = "no ground truth for this data; run `clm evaluate-policy` on simulated data"
# The sections in page order: anchor id and heading. The tests look for every heading.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("stages", "Stage mix"),
    ("actions", "Actions and budget"),
    ("scores", "Score distributions"),
    ("drivers", "Top global drivers"),
    ("calibration", "Calibration"),
    ("policy", "Policy evaluation"),
    ("lift", "Measured lift"),
    ("drift", "Drift against the training snapshot"),
    ("lifecycle", "Lifecycle analytics"),
)


@dataclass(frozen=True)
class ReportContext:
    """Where the report's inputs came from, for its header (strings: the command resolves them)."""

    data_dir: str
    config_source: str
    config_version: str
    config_digest: str
    generated_at: dt.datetime
    truth_dir: str | None = None


@dataclass
class ReportInputs:
    """Everything `build_report` reads, gathered by `gather_report_inputs`."""

    as_of: dt.date
    history: pd.DataFrame  # feature_history rows at the stage cutoffs and the calibration cutoff
    stage_cutoffs: list[dt.date]  # ascending, ending at as_of
    calibration_cutoff: dt.date | None
    models: DecisionModels
    context: ReportContext
    budget: float | None = None
    budget_method: str = "lagrangian"
    evaluation: PolicyEvaluation | None = None
    evaluation_note: str | None = None
    feature_descriptions: Mapping[str, str] = field(default_factory=dict)
    driver_sample: int = 2000
    # models.lift.lift_table over a decision log's decisions and outcomes (the command reads the log), and
    # where it came from; None: the report says no log was given
    lift: pd.DataFrame | None = None
    lift_source: str | None = None
    monitoring: MonitorInputs | None = None  # the drift and lifecycle sections' own inputs
    # the data's end — the online store's snapshot date when it is materialised without --as-of, what /review
    # and the API serve — and the users known then (None when it is the as-of date itself)
    data_end: dt.date | None = None
    users_at_data_end: int | None = None
    stale_after_days: int | None = None  # config serving.stale_after_days (None: no snapshot age shown)


@dataclass
class CalibrationView:
    target: str
    cutoff: dt.date
    metrics: dict[str, float]  # classification_metrics on the closed labels, plus mean_predicted
    figures: dict[str, str]  # reliability, lift → keys of ReportData.figures
    bins: pd.DataFrame | None = None  # models.metrics.reliability_table: the reliability figure's bins


@dataclass
class ReportData:
    """The report's content: numbers as frames, figures as inline markup; `render_report` formats it."""

    title: str
    as_of: dt.date
    generated_at: str
    header: list[tuple[str, str]]
    n_users: int
    currency: str
    versions: dict[str, str]
    headline: dict[str, float]  # users, contacts, cost, expected_value of the plan that would go out
    stage_cutoffs: list[dt.date]
    stage_counts: pd.DataFrame  # cutoff × stage users
    stage_profile: pd.DataFrame  # per stage at as_of: users, share, mean scores, value, contacted
    reach: pd.DataFrame  # at_risk and dormant: users, contacted
    flow_step: tuple[dt.date, dt.date] | None
    flows: pd.DataFrame | None  # from-stage × to-stage users over flow_step
    action_mix: pd.DataFrame  # action_mix() plus `targets` and, with a budget, `users_within_budget`
    budget: dict[str, Any]
    score_summary: pd.DataFrame
    drivers: dict[str, pd.DataFrame]
    calibration: list[CalibrationView]
    calibration_note: str | None
    policy_table: pd.DataFrame | None
    policy_lines: list[str]
    evaluated: bool  # whether the policy evaluation ran (its note says why not)
    offline: dict[str, float | None] | None
    policy_note: str | None
    figures: dict[str, str]
    lift: pd.DataFrame | None = None
    lift_source: str | None = None
    monitor: Any = None  # models.monitoring.Monitor, or None with `monitor_note` saying why
    monitor_note: str | None = None
    analytics: Any = None  # models.lifecycle.LifecycleAnalytics
    snapshot: dict[str, Any] | None = None  # models.snapshot.SnapshotAge of as_of on the day it was generated
    dates_note: str | None = None  # why this report's date and users differ from /review's, when they do


# --------------------------------------------------------------------------------------------------------
# Cutoffs


def months_before(day: dt.date, months: int) -> dt.date:
    """The same day of the month `months` months earlier, clamped to the month's last day."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def stage_cutoffs(
    as_of: dt.date, first_event: dt.date, previous: int = PREVIOUS_STAGE_CUTOFFS
) -> list[dt.date]:
    """`as_of` and up to `previous` monthly cutoffs before it that lie after the data's first event."""
    earlier = [months_before(as_of, k) for k in range(previous, 0, -1)]
    return [c for c in earlier if c > first_event] + [as_of]


# --------------------------------------------------------------------------------------------------------
# The I/O edge


def gather_report_inputs(
    data_dir: Path,
    *,
    config: ModelsConfig,
    as_of: dt.date,
    models: DecisionModels,
    context: ReportContext,
    project_root: Path,
    budget: float | None = None,
    truth_dir: Path | None = None,
    latent_to_stage: Mapping[str, str] | None = None,
    progress: Progress = lambda message: None,
    stale_after_days: int | None = None,
) -> ReportInputs:
    """Read what the report needs from `data_dir`: features and closed labels at the stage and calibration
    cutoffs, and the policy evaluation (true values when `truth_dir` has effects at `as_of`, offline IPS/DR
    from the campaign logged that day; the stage check when the caller passes `latent_to_stage`, the
    simulator's latent → product stage map). Raises DataDirectoryError naming the directory or --as-of."""
    params = FeatureParams.from_config(config.features)
    con = connect()
    inputs = load_inputs(con, Path(data_dir))
    first = con.to_pyarrow(inputs.events.ts.min()).as_py()
    if first is None:
        raise DataDirectoryError(f"{data_dir}/events.parquet has no events")
    first_event = first.date()
    if as_of > inputs.data_end:
        raise DataDirectoryError(
            f"--as-of {as_of} is after the end of the data in {data_dir} ({inputs.data_end}, the day after "
            "its last event)"
        )
    if as_of <= first_event:
        raise DataDirectoryError(
            f"--as-of {as_of} is not after the first event in {data_dir} ({first_event}): nobody to report on"
        )
    cutoffs = stage_cutoffs(as_of, first_event)
    horizon = models.churn.horizon_days
    calibration_cutoff: dt.date | None = as_of - dt.timedelta(days=horizon)
    if calibration_cutoff <= first_event:
        calibration_cutoff = None
    labels = LabelParams.from_config(config.labels, horizon_days=horizon)
    data_end = inputs.data_end if as_of < inputs.data_end else None  # /review's date, when it is another
    wanted = sorted(
        {*cutoffs, *([calibration_cutoff] if calibration_cutoff else []), *([data_end] if data_end else [])}
    )
    progress(f"features at {len(wanted)} cutoffs: {', '.join(map(str, wanted))}")
    # each user's contact state at every cutoff beside the features: the report decides as `clm score` does
    contacts = contact_params(config, models.policy.catalog, models.policy.contact)
    history = feature_history(
        data_dir, wanted, params=params, label_params=labels, con=con, contacts=contacts
    )
    users_at_data_end = None
    if data_end is not None:  # after every other cutoff: counted, then left out of the report's history
        at_end = (history["cutoff"] == data_end).to_numpy()
        users_at_data_end = int(at_end.sum())
        history = history[~at_end].reset_index(drop=True)
    monitoring = _monitoring_inputs(data_dir, config, models, params, labels, con, progress)
    evaluation, note = _evaluation(
        data_dir, config=config, as_of=as_of, loaded=models, truth_dir=truth_dir, latent_to_stage=latent_to_stage,
        project_root=project_root, progress=progress,
    )  # fmt: skip
    return ReportInputs(
        as_of=as_of, history=history, stage_cutoffs=cutoffs, calibration_cutoff=calibration_cutoff,
        models=models, context=context, budget=budget,
        budget_method=config.policy.budget_method, evaluation=evaluation, evaluation_note=note,
        feature_descriptions={f.name: f.description for f in build_registry(params)},
        driver_sample=config.training.shap_sample_rows, monitoring=monitoring, data_end=data_end,
        users_at_data_end=users_at_data_end, stale_after_days=stale_after_days,
    )  # fmt: skip


def _monitoring_inputs(
    data_dir: Path, config: ModelsConfig, models: DecisionModels, params: FeatureParams, labels: LabelParams,
    con: Any, progress: Progress,
) -> MonitorInputs:  # fmt: skip
    """The features at the champion churn model's training cutoffs and the users input (drift, referral)."""
    from models.drift import DriftThresholds
    from models.lifecycle import AnalyticsParams
    from models.monitoring import training_cutoffs

    cutoffs = training_cutoffs(models)
    reference = None
    if cutoffs:
        progress(f"features at the {len(cutoffs)} training cutoffs for the drift section")
        contacts = contact_params(config, models.policy.catalog, models.policy.contact)  # as the snapshot's
        reference = feature_history(
            data_dir, cutoffs, params=params, label_params=labels, con=con, contacts=contacts
        )
    users_path = Path(data_dir) / "users.parquet"
    users = pd.read_parquet(users_path) if users_path.exists() else None
    return MonitorInputs(
        reference=reference, users=users, thresholds=DriftThresholds.from_config(config.monitor),
        analytics=AnalyticsParams.from_config(config.analytics), lift_min_users=config.monitor.lift_min_users,
    )  # fmt: skip


def _evaluation(
    data_dir: Path, *, config: ModelsConfig, as_of: dt.date, loaded: DecisionModels,
    truth_dir: Path | None, latent_to_stage: Mapping[str, str] | None, project_root: Path, progress: Progress,
) -> tuple[PolicyEvaluation | None, str | None]:  # fmt: skip
    """The evaluation at `as_of` of the models and policy the report shows (not logged to MLflow: a report
    only reads), and a note for the
    reader when the true values cannot be computed or the evaluation failed."""
    note = None
    effects = None if truth_dir is None else Path(truth_dir) / "effects.parquet"
    if effects is None or not effects.exists():
        truth_dir, note = None, NO_TRUTH_NOTE
    elif read_effects(truth_dir, as_of) is None:
        known = sorted(
            pd.Timestamp(c).date() for c in pd.read_parquet(effects, columns=["cutoff"])["cutoff"].unique()
        )
        note = (
            f"the simulator truth in {truth_dir} has no true effects at {as_of} (it has "
            f"{', '.join(map(str, known))}); pick one of those dates with --as-of for the true values"
        )
        truth_dir = None
    progress(f"evaluating the policy as of {as_of}")
    try:
        evaluation = evaluate_policy(
            Path(data_dir), config=config, project_root=project_root, as_of=as_of, truth_dir=truth_dir,
            latent_to_stage=latent_to_stage, progress=progress, log_to_mlflow=False, loaded=loaded,
        )  # fmt: skip
    except ValueError as exc:  # the rest of the report stands; the section says why this part is missing
        log.warning("policy evaluation failed: %s", exc)
        return None, f"the policy evaluation failed: {exc}"
    return evaluation, note


# --------------------------------------------------------------------------------------------------------
# The pure part


def build_report(inputs: ReportInputs) -> ReportData:
    """Decisions at every stage cutoff, the mixes, the budget plan, drivers, calibration and the policy
    table, with their figures."""
    as_of, models = inputs.as_of, inputs.models
    policy = models.policy
    history = inputs.history
    features = history.drop(columns=[c for c in ("churn", "upgrade", "reactivation") if c in history.columns])
    at_stage_cutoffs = features[features["cutoff"].isin(inputs.stage_cutoffs)].reset_index(drop=True)
    table = decide_population(
        at_stage_cutoffs, models.churn, models.upgrade, policy, reactivation=models.reactivation
    ).table
    is_now = (table["cutoff"] == as_of).to_numpy()
    if not is_now.any():
        raise DataDirectoryError(f"no user is known before --as-of {as_of}")
    now = table[is_now].reset_index(drop=True)
    frame_now = at_stage_cutoffs[is_now].reset_index(drop=True)
    figures: dict[str, str] = {}

    counts = stage_counts(table)
    figures["stage_share"] = figure_svg(
        stage_share_figure(counts, title="Users per stage at each cutoff"), "stage-share"
    )
    flows = flow_step = None
    if len(inputs.stage_cutoffs) > 1:
        flow_step = (inputs.stage_cutoffs[-2], as_of)
        flows = flow_matrix(stage_flows(table), *flow_step)

    mix = action_mix(now)
    targets = {a.name: OUTCOME_OF[a.outcome] for a in policy.catalog}
    mix.insert(1, "targets", mix["action"].map(targets).fillna(""))
    mix.loc[mix["action"] == NO_ACTION, ["mean_delta_stay", "mean_delta_upgrade"]] = math.nan  # no contact
    budget, within_budget = _budget(now, frame_now, models, inputs.budget, inputs.budget_method)
    if within_budget is not None:
        mix["users_within_budget"] = mix["action"].map(within_budget).fillna(0).astype(int)
    figures["action_mix"] = figure_svg(
        action_mix_figure(mix, title=f"Actions chosen as of {as_of}"), "action-mix"
    )

    figures["scores"] = figure_svg(
        score_distribution_figure(
            {"churn": now["p_churn"], "upgrade": now["p_upgrade"]}, title=f"Scores as of {as_of}"
        ),
        "scores",
    )
    drivers = {}
    for target, bundle in (("churn", models.churn), ("upgrade", models.upgrade)):
        values, sampled, ranking = global_drivers(frame_now, bundle, sample=inputs.driver_sample)
        top = ranking.head(TOP_DRIVERS).copy()
        top.insert(1, "description", top["feature"].map(inputs.feature_descriptions).fillna(""))
        drivers[target] = top
        figures[f"beeswarm_{target}"] = figure_png_data_uri(
            shap_beeswarm_figure(values, sampled, max_display=BEESWARM_FEATURES)
        )
    calibration, calibration_note, calibration_figures = _calibration(
        history, inputs.calibration_cutoff, models
    )
    figures.update(calibration_figures)
    policy_rows, lines, offline = _policy_section(inputs.evaluation)
    drift = drift_note = analytics = None
    if inputs.monitoring is not None:
        drift, drift_note, analytics = monitor_and_analytics(
            inputs.monitoring, models, frame_now, now, table, as_of
        )

    plan = budget["plan"] if inputs.budget is not None else budget["policy"]
    versions = {
        target: models.described(getattr(models, target)) for target in ("churn", "upgrade", "policy")
    }
    versions["reactivation"] = (
        models.described(models.reactivation)
        if models.reactivation is not None
        else "none registered: lapsed users scored by the churn model"
    )
    context = inputs.context
    generated_at = context.generated_at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    header = [
        ("as of", str(as_of)),
        ("data", context.data_dir),
        ("users scored", f"{len(now):,}"),
        ("churn model", versions["churn"]),
        ("upgrade model", versions["upgrade"]),
        ("reactivation model", versions["reactivation"]),
        ("policy", versions["policy"]),
        ("feature version", models.churn.feature_version),
        (
            "config",
            f"{context.config_source} (version {context.config_version}, digest {context.config_digest})",
        ),
        ("simulator truth", context.truth_dir or "none"),
        ("generated at", generated_at),
    ]
    return ReportData(
        title=f"{TITLE} — as of {as_of}",
        as_of=as_of,
        generated_at=generated_at,
        header=header,
        n_users=len(now),
        currency=policy.value.currency,
        versions=versions,
        headline={
            "users": float(len(now)),
            **{k: float(plan[k]) for k in ("contacts", "cost", "expected_value")},
        },
        stage_cutoffs=list(inputs.stage_cutoffs),
        stage_counts=counts,
        stage_profile=_stage_profile(now, list(counts.columns)),
        reach=contacted_by_stage(now),
        flow_step=flow_step,
        flows=flows,
        action_mix=mix,
        budget=budget,
        score_summary=_score_summary(now),
        drivers=drivers,
        calibration=calibration,
        calibration_note=calibration_note,
        policy_table=policy_rows,
        policy_lines=lines,
        evaluated=inputs.evaluation is not None,
        offline=offline,
        policy_note=inputs.evaluation_note,
        figures=figures,
        lift=inputs.lift,
        lift_source=inputs.lift_source,
        monitor=drift,
        monitor_note=drift_note,
        analytics=analytics,
        snapshot=None
        if inputs.stale_after_days is None
        else snapshot_age(as_of, context.generated_at.date(), inputs.stale_after_days).as_dict(),
        dates_note=dates_note(
            as_of,
            len(now),
            inputs.data_end,
            inputs.users_at_data_end,
            evaluated=inputs.evaluation is not None,
        ),
    )


def dates_note(
    as_of: dt.date, users: int, data_end: dt.date | None, users_at_data_end: int | None, *, evaluated: bool
) -> str | None:
    """Why this report's date and user count differ from /review's (None when they do not): the report scores
    the users known before its --as-of date, the online store that /review and the API read holds every user
    known at the data's end."""
    if data_end is None or data_end == as_of:
        return None
    why = (
        "a date whose campaign wave has the simulator's true effects, so the policy is valued against the truth "
        "(clm demo picks the latest such wave)"
        if evaluated
        else "the date given to clm report"
    )
    more = "" if users_at_data_end is None else f", with {users_at_data_end:,} users"
    change = "" if users_at_data_end is None else f" ({users_at_data_end - users:+,} users)"
    return (
        f"This report is as of {as_of} — {why} — and scores the {users:,} users known before that date. "
        f"/review and the decision API read the online store, which clm features materialize writes at the "
        f"data's end, {data_end} (the day after the last event){more}: their dates and counts differ from these"
        f"{change} because they look at a later day, which also takes in users who appeared since. "
        f"clm report --as-of {data_end} reports on /review's date (without the truth-based policy table when "
        "the simulator has no effects there)."
    )


def _budget(
    now: pd.DataFrame, frame_now: pd.DataFrame, models: DecisionModels, budget: float | None, method: str,
) -> tuple[dict[str, Any], pd.Series | None]:  # fmt: skip
    """The policy's own choice (contacts, cost, expected value) and, with a budget, the plan within it as
    `clm score --budget` makes it, with the users per action under the plan."""
    contacted = now["action"] != NO_ACTION
    out: dict[str, Any] = {
        "budget": budget,
        "method": method,
        "policy": {
            "contacts": int(contacted.sum()),
            "cost": float(now["cost"].sum()),
            "expected_value": float(now["expected_value"].sum()),
        },
    }
    if budget is None:
        return out, None
    scores = Scores(now["p_churn"].to_numpy(), now["p_upgrade"].to_numpy(),
                    (now["scored_by"] == "reactivation").to_numpy(), now["p_return"].to_numpy(dtype=float))  # fmt: skip
    # as `clm score --budget` plans it: the global control group held out before the budget is spent
    planned = decide_population(
        frame_now, models.churn, models.upgrade, models.policy, budget=budget, budget_method=method, scores=scores,
        exploration_version=models.label(models.policy),
    )  # fmt: skip
    plan = planned.plan
    assert plan is not None
    out["policy"] = {  # the policy's own choice among the users the plan may contact
        "contacts": plan.unconstrained_contacts,
        "cost": plan.unconstrained_cost,
        "expected_value": plan.unconstrained_value,
    }
    out["plan"] = {"contacts": plan.contacts, "cost": plan.total_cost, "expected_value": plan.total_value}
    out["price"] = plan.price
    out["dropped"] = int((contacted.to_numpy() & (plan.chosen < 0)).sum())
    return out, planned.table["action"].value_counts()


def _stage_profile(now: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    grouped = now.groupby("stage").agg(
        users=("stage", "size"), p_churn=("p_churn", "mean"), p_upgrade=("p_upgrade", "mean"),
        value_if_retained=("value_if_retained", "mean"), clv=("clv", "mean"),
        contacted=("action", lambda a: int((a != NO_ACTION).sum())),
    )  # fmt: skip
    grouped = grouped.reindex([s for s in order if s in grouped.index])
    grouped.insert(1, "share", grouped["users"] / max(len(now), 1))
    return grouped.reset_index()


def _score_summary(now: pd.DataFrame) -> pd.DataFrame:
    """Mean, 10th/50th/90th percentile (and the total CLV) of the scores: statistics × scores."""
    columns = {}
    for column in ("p_churn", "p_upgrade", "clv"):
        values = now[column].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9]) if values.size else (math.nan,) * 3
        columns[column] = [values.mean() if values.size else math.nan, q10, q50, q90,
                           values.sum() if column == "clv" else math.nan]  # fmt: skip
    return pd.DataFrame(
        {"statistic": ["mean", "10th percentile", "median", "90th percentile", "total"], **columns}
    )


def _calibration(
    history: pd.DataFrame, cutoff: dt.date | None, models: DecisionModels
) -> tuple[list[CalibrationView], str | None, dict[str, str]]:
    """Each model's scores against the closed labels at `cutoff`, on the population it scores (bundle
    metadata, models.population: churn and upgrade on the users alive at the cutoff, reactivation on the
    lapsed ones), per target whose horizon is the churn model's: the views, a note on what is not shown,
    the figures."""
    if cutoff is None:
        return [], "the data has no cutoff whose horizon closed before the as-of date", {}
    rows = history[history["cutoff"] == cutoff]
    views, skipped, figures = [], [], {}
    targets = [("churn", models.churn), ("upgrade", models.upgrade)]
    if models.reactivation is not None:
        targets.append(("reactivation", models.reactivation))
    for target, bundle in targets:
        if bundle.horizon_days != models.churn.horizon_days:
            skipped.append(f"{target} (its {bundle.horizon_days}-day horizon differs from the labels')")
            continue
        if target not in rows:
            skipped.append(f"{target} (no {target} labels)")
            continue
        population = bundle.metadata.get("population", ALL_USERS)
        scored = rows[in_population(rows, population, bundle.horizon_days)]
        closed = scored[scored[target].notna()]
        if closed.empty or closed[target].nunique() < 2:
            skipped.append(f"{target} (too few closed labels at {cutoff} in its population)")
            continue
        y = closed[target].astype(float).to_numpy()
        p = score(closed, bundle)["probability"].to_numpy()
        metrics = classification_metrics(y, p)
        metrics["mean_predicted"] = float(p.mean())
        metrics["population"] = population
        keys = {"reliability": f"calibration_{target}", "lift": f"lift_{target}"}
        figures[keys["reliability"]] = figure_svg(
            calibration_figure(
                y, None, p, title=f"{target} ({population} users): predicted vs observed, cutoff {cutoff}"
            ),
            keys["reliability"],
        )
        figures[keys["lift"]] = figure_svg(lift_figure(y, {f"{target} model": p}), keys["lift"])
        views.append(CalibrationView(target, cutoff, metrics, keys, reliability_table(y, p)))
    note = f"not shown: {'; '.join(skipped)}" if skipped else None
    return views, note, figures


def _policy_section(
    evaluation: PolicyEvaluation | None,
) -> tuple[pd.DataFrame | None, list[str], dict[str, float | None] | None]:
    if evaluation is None:
        return None, [], None
    rows = None
    if evaluation.value_per_1000.get("clm") is not None:
        rows = policy_table(evaluation)
        oracle = evaluation.value_per_1000.get("oracle")
        rows.insert(1, "label", rows["policy"].map(POLICY_LABELS).fillna(rows["policy"]))
        rows["share_of_oracle"] = rows["value_per_1000"] / oracle if oracle else math.nan
    lines = evaluation_findings(evaluation)
    offline = evaluation.offline if evaluation.offline.get("n_logged") else None
    return rows, lines, offline


# --------------------------------------------------------------------------------------------------------
# Rendering


@dataclass
class Table:
    """A table as the template draws it: column labels with a kind (how to format and align), rows of raw
    values. Numbers are right-aligned with thousands separators."""

    id: str
    columns: list[tuple[str, str]]
    rows: list[list[Any]]
    row_header: bool = True  # the first cell of each row is a label


NUMBER_FORMATS = {
    "int": "{:,.0f}",
    "delta": "{:+,.0f}",
    "money": "{:,.0f}",
    "money2": "{:,.2f}",
    "pct": "{:.1%}",
    "prob": "{:.3f}",
    "ratio": "{:.2f}",
    "num": "{:,.4g}",
}


def format_value(value: Any, kind: str) -> str:
    """One cell's text: `text` as is, numbers by NUMBER_FORMATS (thousands separators, a typographic minus)
    or `pp` (a probability change in signed percentage points); "–" for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "text":
        return str(value)

    def text_of(number: float) -> str:
        return f"{100 * number:+.1f} pp" if kind == "pp" else NUMBER_FORMATS[kind].format(number)

    text = text_of(float(value))
    if text.startswith("-") and not any(digit in text for digit in "123456789"):
        text = text_of(0.0)  # no "−0" for a tiny negative
    return text.replace("-", "−")


def _frame_table(table_id: str, frame: pd.DataFrame, columns: Sequence[tuple[str, str, str]]) -> Table:
    """`columns`: (frame column, label, kind)."""
    return Table(
        table_id,
        [(label, kind) for _, label, kind in columns],
        [[row[key] for key, _, _ in columns] for row in frame.to_dict("records")],
    )


def report_tables(data: ReportData) -> dict[str, Table]:
    """Every table of the report, in the shape the template draws."""
    cur = data.currency
    tables: dict[str, Table] = {}
    counts = data.stage_counts
    cutoffs = list(counts.index)
    now, previous = cutoffs[-1], (cutoffs[-2] if len(cutoffs) > 1 else None)
    columns = [("stage", "text")] + [
        (f"{c} (as of)" if c == now else str(c), "int") for c in cutoffs
    ]  # fmt: skip
    columns += [("change vs " + str(previous), "delta")] if previous is not None else []
    rows = []
    for stage in counts.columns:
        row = [stage, *[int(counts.at[c, stage]) for c in cutoffs]]
        if previous is not None:
            row.append(int(counts.at[now, stage]) - int(counts.at[previous, stage]))
        rows.append(row)
    rows.append(["all users", *[int(counts.loc[c].sum()) for c in cutoffs]]
                + ([int(counts.loc[now].sum() - counts.loc[previous].sum())] if previous is not None else []))  # fmt: skip
    tables["stage_counts"] = Table("stage-counts", columns, rows)
    tables["stage_profile"] = _frame_table("stage-profile", data.stage_profile, [
        ("stage", "stage", "text"), ("users", "users", "int"), ("share", "share", "pct"),
        ("p_churn", "mean churn probability", "prob"), ("p_upgrade", "mean upgrade probability", "prob"),
        ("value_if_retained", f"mean value if retained ({cur})", "money"), ("clv", f"mean CLV ({cur})", "money"),
        ("contacted", "to contact", "int"),
    ])  # fmt: skip
    tables["reach"] = _frame_table("stage-reach", data.reach, [
        ("stage", "stage", "text"), ("users", "users", "int"), ("contacted", "contacted", "int"),
    ])  # fmt: skip
    if data.flows is not None:
        flows = data.flows
        tables["flows"] = Table(
            "stage-flows",
            [("from ↓ / to →", "text"), *[(str(c), "int") for c in flows.columns], ("total", "int")],
            [
                [stage, *[int(v) for v in flows.loc[stage]], int(flows.loc[stage].sum())]
                for stage in flows.index
            ],
        )
    mix_columns = [
        ("action", "action", "text"), ("targets", "targets", "text"), ("users", "users", "int"),
        ("share", "share", "pct"), ("mean_delta_stay", "mean Δp(stay or return)", "pp"),
        ("mean_value_if_retained", f"mean value if retained ({cur})", "money"),
        ("retention_value", f"Σ retention value ({cur})", "money"), ("mean_delta_upgrade", "mean Δp(upgrade)", "pp"),
        ("upgrade_gain", f"Σ upgrade gain ({cur})", "money"), ("cost", f"Σ cost ({cur})", "money"),
        ("expected_value", f"Σ expected value ({cur})", "money"),
    ]  # fmt: skip
    if "users_within_budget" in data.action_mix:
        mix_columns.append(("users_within_budget", "users within budget", "int"))
    tables["action_mix"] = _frame_table("action-mix", data.action_mix, mix_columns)
    b = data.budget
    free = "the policy's choice (no budget" + (", control group held out)" if "plan" in b else ")")
    budget_rows = [[free, b["policy"]["contacts"], b["policy"]["cost"],
                    b["policy"]["expected_value"]]]  # fmt: skip
    if "plan" in b:
        budget_rows.append([f"within the budget of {b['budget']:,.2f} ({b['method']})", b["plan"]["contacts"],
                            b["plan"]["cost"], b["plan"]["expected_value"]])  # fmt: skip
    for row in budget_rows:
        row.append(row[3] / row[1] if row[1] else math.nan)
    tables["budget"] = Table(
        "budget",
        [("plan", "text"), ("contacts", "int"), (f"cost ({cur})", "money2"),
         (f"expected value ({cur})", "money2"), ("value per contact", "money2")],
        budget_rows,
    )  # fmt: skip
    tables["scores"] = _frame_table("score-summary", data.score_summary, [
        ("statistic", "", "text"), ("p_churn", "churn probability", "prob"),
        ("p_upgrade", "upgrade probability", "prob"), ("clv", f"CLV ({cur})", "money"),
    ])  # fmt: skip
    for target, top in data.drivers.items():
        ranked = top.assign(rank=range(1, len(top) + 1))
        tables[f"drivers_{target}"] = _frame_table(f"drivers-{target}", ranked, [
            ("rank", "#", "int"), ("feature", "feature", "text"), ("description", "what it measures", "text"),
            ("mean_abs_contribution", "mean |SHAP| (log-odds)", "prob"),
        ])  # fmt: skip
    if data.calibration:
        tables["calibration"] = Table(
            "calibration-table",
            [("model", "text"), ("population", "text"), ("cutoff", "text"), ("users", "int"), ("observed rate", "pct"),
             ("mean predicted", "pct"), ("ECE", "prob"), ("Brier", "prob"), ("ROC AUC", "prob"),
             ("top-decile lift", "ratio")],
            [[v.target, v.metrics.get("population", ""), str(v.cutoff), v.metrics["rows"], v.metrics["positive_rate"], v.metrics["mean_predicted"],
              v.metrics["ece"], v.metrics["brier"], v.metrics["roc_auc"], v.metrics["top_decile_lift"]]
             for v in data.calibration],
        )  # fmt: skip
        for v in data.calibration:
            bins = v.bins.assign(
                scores=[f"{low:.3f}–{high:.3f}" for low, high in zip(v.bins["bin_low"], v.bins["bin_high"], strict=True)],
                note=np.where(v.bins["reliable"], "", f"fewer than {MIN_RELIABLE_BIN_USERS} users: too few to read"),
            )  # fmt: skip
            tables[f"reliability_{v.target}"] = _frame_table(f"reliability-{v.target}", bins, [
                ("scores", "predicted probability", "text"), ("users", "users", "int"),
                ("positives", "positives", "int"), ("mean_predicted", "mean predicted", "pct"),
                ("observed_rate", "observed rate", "pct"), ("note", "", "text"),
            ])  # fmt: skip
    if data.policy_table is not None:
        tables["policy"] = _frame_table("policy-table", data.policy_table, [
            ("label", "policy", "text"), ("value_per_1000", f"true value / 1,000 users ({cur})", "money"),
            ("contacts_per_1000", "contacts / 1,000", "money"), ("cost_per_1000", f"cost / 1,000 ({cur})", "money"),
            ("share_of_oracle", "÷ oracle", "ratio"),
        ])  # fmt: skip
    if data.offline is not None:
        o = data.offline
        tables["offline"] = Table(
            "offline-estimates",
            [("estimator", "text"), (f"value / 1,000 logged users ({cur})", "money"), ("± standard error", "money")],
            [["IPS", o.get("ips"), o.get("ips_se")], ["SNIPS", o.get("snips"), None],
             ["DR (doubly robust)", o.get("dr"), o.get("dr_se")],
             ["truth on the same users", o.get("truth_on_logged"), None]],
        )  # fmt: skip
    if data.lift is not None and len(data.lift):
        rows = []
        for r in data.lift.to_dict("records"):
            row = [r["action"], r["stage"], r["n_treated"], r["n_control"]]
            for measure in ("churn", "return", "upgrade"):
                row += [r[f"{measure}_lift"], r[f"{measure}_low"], r[f"{measure}_high"]]
            rows.append([*row, r["margin_incremental"], r["margin_low"], r["margin_high"]])
        columns = [
            ("comparison", "text"),
            ("stage", "text"),
            ("users treated", "int"),
            ("users control", "int"),
        ]
        for measure in ("churn", "return", "upgrade"):
            columns += [(f"Δ {measure}", "pp"), ("95 % low", "pp"), ("95 % high", "pp")]
        columns += [
            (f"incremental margin / user ({cur})", "money2"),
            ("95 % low", "money2"),
            ("95 % high", "money2"),
        ]
        tables["lift"] = Table("lift-table", columns, rows)
    if data.analytics is not None:
        tables.update(monitor_tables(data.monitor, data.analytics, cur, Table))
    return tables


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("training", "templates"),
        autoescape=select_autoescape(),
        undefined=StrictUndefined,
    )
    env.filters["fmt"] = format_value
    return env


def render_report(data: ReportData) -> str:
    """The report as one HTML document with no external reference."""
    from markupsafe import Markup

    template = _environment().get_template("report.html.j2")
    return template.render(
        data=data,
        sections=dict(SECTIONS),
        tables=report_tables(data),
        figures={name: Markup(markup) for name, markup in data.figures.items()},
    )


def summary_line(data: ReportData) -> str:
    """One line for the terminal: users, contacts, cost and expected value of the plan."""
    h = data.headline
    plan = "within the budget" if "plan" in data.budget else "unconstrained"
    return (
        f"{int(h['users']):,} users as of {data.as_of}: {int(h['contacts']):,} to contact ({plan}), cost "
        f"{h['cost']:,.2f}, expected value {h['expected_value']:,.2f} {data.currency} ({data.versions['policy']})"
    )


__all__ = [
    "SECTIONS",
    "ReportContext",
    "ReportData",
    "ReportInputs",
    "build_report",
    "gather_report_inputs",
    "render_report",
    "stage_cutoffs",
    "summary_line",
]
