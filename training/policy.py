"""The policy job (`clm train --model policy`): uplift models fitted on the logged campaign waves, checked on
the latest closed wave they never saw (Qini/AUUC per action, offline IPS/DR value, and on simulated data
the rank agreement with the true effects), logged to MLflow and registered as `clm-policy@challenger`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.build import LabelParams
from features.contacts import ContactParams, join_contact_state
from features.jobs import build_feature_tables, connect, contact_state_frame, load_inputs
from features.registry import FeatureParams, build_registry, feature_names, registry_version
from models.arbitration import ELIGIBLE, INELIGIBLE_STAGE
from models.catalog import NO_ACTION, ContactPolicy, contact_params, load_catalog
from models.config import ModelsConfig
from models.decision import load_bundles, load_reactivation, population_scores
from models.frame import category_lists, model_matrix
from models.policy import OUTCOME_OF, Decisions, PolicyBundle, decide, load_policy, save_policy, stages_of
from models.population import REACTIVATION_POPULATION, in_population
from models.registry import download_policy
from models.stages import StageRules
from models.uplift import UpliftModel, UpliftParams
from models.uplift_metrics import auuc, qini_coefficient
from models.value import ValueParams, monthly_churn
from training import tracking
from training.dataset import NotEnoughHistory, load_training_frame
from training.offline import OfflineEstimate, estimate, outcome_model_values, realised_rewards
from training.truth import effect_matrices, read_effects

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
POLICY_ARTIFACT = "policy"


class NoCampaigns(ValueError):
    """No logged campaign to learn uplift from: decisions use the catalogue's prior effects."""


def policy_parts(config: ModelsConfig) -> dict[str, Any]:
    """The catalog, contact policy, value and uplift parameters from the config (validated)."""
    return {
        "catalog": load_catalog(config.actions),
        "contact": ContactPolicy.from_config(config.policy),
        "value": ValueParams.from_config(config.value, config.features),
        "uplift": UpliftParams.from_config(config.policy),
    }


def policy_frame(
    data_dir: Path,
    config: ModelsConfig,
    *,
    as_of: dt.date | None = None,
    waves: list[dt.date] | None = None,
    contacts: ContactParams | None = None,
) -> tuple[pd.DataFrame, dt.date]:
    """One row per logged campaign decision (user × wave day, holdouts included): the user's features as
    of the start of that day with the contact state the policy's arbitration reads beside them (features.contacts,
    for `contacts`, default the config's catalogue: so a decision replayed on the wave keeps every cooldown,
    cap and suppression), the logged action and propensity, and the churn/upgrade labels of the horizon after
    it (null while open). Dormant users are kept: win-back decisions are made about them. `waves` restricts
    the rows to those contact days."""
    con = connect()
    inputs = load_inputs(con, data_dir, as_of)
    if inputs.campaigns is None:
        raise NoCampaigns(f"{data_dir}: no campaigns.parquet — the policy learns from logged campaigns")
    campaigns = con.to_pandas(inputs.campaigns.select("user_id", "ts", "action", "propensity"))
    if campaigns.empty:
        raise NoCampaigns(f"{data_dir}: campaigns.parquet has no rows before {inputs.data_end}")
    campaigns["cutoff"] = pd.to_datetime(campaigns["ts"], utc=True).dt.date
    if waves is not None:
        campaigns = campaigns[campaigns["cutoff"].isin(set(waves))]
        if campaigns.empty:
            raise NotEnoughHistory(f"{data_dir}: no campaign rows on {', '.join(map(str, waves))}")
    before = len(campaigns)
    campaigns = campaigns.sort_values(["cutoff", "user_id", "ts"]).drop_duplicates(["user_id", "cutoff"])
    if len(campaigns) < before:
        log.warning(
            "%d users had several campaign rows on one day; the first of each day is used",
            before - len(campaigns),
        )
    missing = campaigns["propensity"].isna()
    if missing.any():
        log.warning(
            "%d campaign rows have no logged propensity; they are weighted as if chosen with certainty",
            int(missing.sum()),
        )
        campaigns.loc[missing, "propensity"] = 1.0
    waves = sorted(campaigns["cutoff"].unique())
    labels = dataclasses.replace(
        LabelParams.from_config(config.labels), keep_churned_users=True,
        churn_offset_days=config.policy.outcome_offset_days,
    )  # fmt: skip
    params = FeatureParams.from_config(config.features)
    with tempfile.TemporaryDirectory(prefix="clm-policy-") as tmp:
        summary = build_feature_tables(
            data_dir, waves, Path(tmp), params=params, label_params=labels, as_of=as_of, con=con
        )
        features = load_training_frame(summary.features_path, summary.labels_path)
    state = contact_state_frame(con, inputs, waves, contacts or contact_params(config))
    features = join_contact_state(features, state, contacts or contact_params(config))
    frame = campaigns.drop(columns=["ts"]).merge(features, on=["user_id", "cutoff"], how="inner")
    if len(frame) < len(campaigns):
        log.info(
            "%d campaign rows are for users with no history before the contact day; skipped",
            len(campaigns) - len(frame),
        )
    return frame.reset_index(drop=True), inputs.data_end


def wave_split(frame: pd.DataFrame, window_days: int) -> tuple[list[dt.date], dt.date]:
    """Training waves and the test wave: the latest wave whose outcome window has closed, and every wave
    whose window closed by it."""
    closed = sorted(frame.loc[frame["churn"].notna(), "cutoff"].unique())
    if not closed:
        raise NotEnoughHistory("no campaign wave has a closed outcome window yet")
    test = closed[-1]
    train = [c for c in closed if c + dt.timedelta(days=window_days) <= test]
    if not train:
        raise NotEnoughHistory(
            f"need a campaign wave whose {window_days}-day window closes by the test wave {test}"
        )
    return train, test


def outcomes_of(rows: pd.DataFrame, horizon_days: int = 30) -> dict[str, np.ndarray]:
    """Churn and upgrade for every logged decision; coming back (`reactivation`) for the lapsed users only
    (models.population), unknown elsewhere — the uplift on returning is learned where win-backs are made."""
    out = {name: rows[name].astype(float).to_numpy() for name in ("churn", "upgrade")}
    if "reactivation" in rows:
        gone = in_population(rows, REACTIVATION_POPULATION, horizon_days)
        out["reactivation"] = np.where(gone, rows["reactivation"].astype(float).to_numpy(), np.nan)
    return out


MIN_PLAN_ROWS = 50  # holdout rows of a plan needed to learn its retained churn


def retained_churn_by_plan(rows: pd.DataFrame, horizon_days: int) -> dict[str, float]:
    """Monthly churn of users still alive at a wave, per current plan, among the holdouts (never contacted
    on that wave, so no action's effect in it): the survival of "similar users" that value if retained
    uses. Plans with fewer than MIN_PLAN_ROWS rows are left to `value.retained_churn_month`."""
    alive = ~in_population(rows, REACTIVATION_POPULATION, horizon_days)
    holdouts = rows[alive & (rows["action"] == NO_ACTION).to_numpy() & rows["churn"].notna().to_numpy()]
    out = {}
    for plan, group in holdouts.groupby(holdouts["current_plan"].astype("object"), observed=True):
        if len(group) >= MIN_PLAN_ROWS:
            out[str(plan)] = float(
                monthly_churn(np.array([group["churn"].astype(float).mean()]), horizon_days)[0]
            )
    return out


def retained_churn_by_stage(
    rows: pd.DataFrame, stages: np.ndarray, horizon_days: int
) -> dict[str, dict[str, float]]:
    """`retained_churn_by_plan` per lifecycle stage (the stage each holdout was in at the wave): a mature
    user who stays is worth more months than a new or at-risk one on the same plan. A (stage, plan) with
    fewer than MIN_PLAN_ROWS holdouts is left to the plan's rate."""
    out: dict[str, dict[str, float]] = {}
    stages = np.asarray(stages, dtype=object)
    for stage in sorted({s for s in stages if isinstance(s, str)}):
        plans = retained_churn_by_plan(rows[stages == stage], horizon_days)
        if plans:
            out[stage] = plans
    return out


def fit_uplift(
    rows: pd.DataFrame, parts: dict[str, Any], names: list[str], categories: dict[str, list[str]],
    horizon_days: int = 30,
) -> UpliftModel:  # fmt: skip
    priors = {
        a.name: {
            "churn": a.prior_delta_churn,
            "upgrade": a.prior_delta_upgrade,
            "reactivation": a.prior_return,
        }
        for a in parts["catalog"]
    }
    X = model_matrix(rows, names, categories)
    return UpliftModel(parts["uplift"], priors).fit(
        X,
        rows["action"].to_numpy(),
        rows["propensity"].to_numpy(dtype=float),
        outcomes_of(rows, horizon_days),
    )


def uplift_quality(
    policy: PolicyBundle,
    rows: pd.DataFrame,
    true_deltas: tuple[np.ndarray, np.ndarray] | None = None,
    offered: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Per action, on logged rows the policy never saw and only where the policy would offer the action
    (`offered`, (n, A): the user's stage is eligible): Qini coefficient and AUUC of its targeted-outcome
    uplift (contacted with the action vs the holdouts, inverse-propensity weighted), and on simulated data
    the Spearman correlation of the estimated with the true effect."""
    deltas = policy.uplift.predict(rows)
    out: dict[str, dict[str, float]] = {}
    for a, action in enumerate(policy.catalog):
        outcome = OUTCOME_OF[action.outcome]
        estimated = deltas[outcome][:, a]
        benefit = -estimated if outcome == "churn" else estimated
        where = np.ones(len(rows), dtype=bool) if offered is None else offered[:, a]
        mask = (
            where
            & rows["action"].isin([action.name, NO_ACTION]).to_numpy()
            & rows[outcome].notna().to_numpy()
        )
        treated = (rows["action"].to_numpy() == action.name)[mask]
        good = rows.loc[mask, outcome].astype(float).to_numpy()
        if outcome == "churn":
            good = 1.0 - good
        weights = 1.0 / rows.loc[mask, "propensity"].to_numpy(dtype=float)
        metrics = {
            "treated_rows": float(treated.sum()),
            "model": float(policy.source(action.name) == "model"),
        }
        if treated.sum() >= 10 and (~treated).sum() >= 10:
            metrics["qini"] = qini_coefficient(benefit[mask], treated, good, weights)
            metrics["auuc"] = auuc(benefit[mask], treated, good, weights)
        if true_deltas is not None:
            true = true_deltas[0 if outcome == "churn" else 1][:, a]
            ok = np.isfinite(true) & where
            if ok.sum() >= 10 and np.ptp(estimated[ok]) > 0:
                metrics["truth_spearman"] = float(
                    pd.Series(estimated[ok]).corr(pd.Series(true[ok]), method="spearman")
                )
        out[action.name] = metrics
    return out


def offline_value(policy: PolicyBundle, rows: pd.DataFrame, decisions: Decisions) -> OfflineEstimate:
    """IPS/DR estimates of the policy's incremental value per 1,000 logged rows (greedy decisions)."""
    values = decisions.values
    costs = {a.name: a.cost for a in policy.catalog}
    # valued as the decision values them: not staying (churn, for a lapsed user not coming back) costs the
    # value if retained; decisions.delta_churn is −Δp(stay or return)
    reward = realised_rewards(
        rows["action"].to_numpy(), rows["churn"].astype(float).to_numpy(), rows["upgrade"].astype(float).to_numpy(),
        values["value_if_retained"], values["upgrade_value"], costs,
    )  # fmt: skip
    control = policy.uplift.predict_control(rows)
    q_hat = outcome_model_values(
        control["churn"], control["upgrade"], decisions.delta_churn, decisions.delta_upgrade,
        values["value_if_retained"], values["upgrade_value"], [a.cost for a in policy.catalog],
    )  # fmt: skip
    return estimate(
        decisions.arbitration.chosen_names(), rows["action"].to_numpy(), rows["propensity"].to_numpy(dtype=float),
        reward, q_hat, policy.actions,
    )  # fmt: skip


def behaviour_checks(
    policy: PolicyBundle, rows: pd.DataFrame, p_churn: np.ndarray, p_upgrade: np.ndarray, horizon: int
) -> tuple[bool, list[str]]:
    """What must hold for any policy before it serves: deterministic without exploration, only eligible
    choices, no contact when every action costs more than anything can be worth, finite uplifts."""
    lines: list[str] = []
    first = decide(rows, p_churn, p_upgrade, policy, churn_horizon_days=horizon)
    second = decide(rows, p_churn, p_upgrade, policy, churn_horizon_days=horizon)
    checks = {
        "deterministic without exploration": np.array_equal(
            first.arbitration.chosen, second.arbitration.chosen
        )
    }
    chosen = first.arbitration.chosen
    picked = chosen >= 0
    statuses = first.arbitration.status[np.flatnonzero(picked), chosen[picked]]
    checks["every chosen action was eligible and not suppressed"] = bool(np.all(statuses == ELIGIBLE))
    costly = dataclasses.replace(
        policy, catalog=tuple(dataclasses.replace(a, cost=1e12) for a in policy.catalog)
    )
    none = decide(rows, p_churn, p_upgrade, costly, churn_horizon_days=horizon)
    checks["no contact when every action costs more than it can return"] = bool(
        np.all(none.arbitration.chosen < 0)
    )
    checks["uplift estimates are finite"] = bool(
        np.isfinite(first.delta_churn).all() and np.isfinite(first.delta_upgrade).all()
    )
    for name, ok in checks.items():
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name}")
    return all(checks.values()), lines


@dataclass
class TrainedPolicy:
    registered_name: str
    version: str
    run_id: str
    train_waves: list[dt.date]
    test_wave: dt.date
    quality: dict[str, dict[str, float]]
    offline: OfflineEstimate
    action_share: dict[str, float]
    behaviour_passed: bool
    scoring_models: dict[str, str]


def train_policy(
    data_dir: Path,
    *,
    config: ModelsConfig,
    project_root: Path,
    as_of: dt.date | None = None,
    truth_dir: Path | None = None,
    progress: Progress = lambda message: None,
) -> TrainedPolicy:
    """Everything `clm train --model policy` does."""
    tracking.configure(tracking.resolve_tracking_uri(project_root))
    parts = policy_parts(config)
    progress("policy: building features at each campaign wave")
    frame, data_end = policy_frame(data_dir, config, as_of=as_of)
    churn, upgrade, scoring_models = load_bundles(config, optional=("upgrade",))
    horizon = config.labels.horizon_days
    train_waves, test_wave = wave_split(frame, horizon + config.policy.outcome_offset_days)
    params = FeatureParams.from_config(config.features)
    registry = build_registry(params)
    names = feature_names(registry)
    categories = category_lists(registry, frame)
    train_rows = frame[frame["cutoff"].isin(train_waves) & frame["churn"].notna()]
    test_rows = frame[(frame["cutoff"] == test_wave) & frame["churn"].notna()].reset_index(drop=True)
    progress(
        f"policy: fitting uplift models on {len(train_rows):,} logged decisions in {len(train_waves)} waves"
    )
    uplift = fit_uplift(train_rows, parts, names, categories, horizon)
    name = config.models.policy.registered_name
    reactivation = load_reactivation(config)
    train_scores = population_scores(train_rows, churn, upgrade, reactivation)
    train_stages = stages_of(
        train_rows, train_scores.churn, train_scores.upgrade, StageRules.from_config(config.stages, names)
    ).stage
    value = dataclasses.replace(
        parts["value"], retained_churn_by_plan=retained_churn_by_plan(train_rows, horizon),
        retained_churn_by_stage=retained_churn_by_stage(train_rows, train_stages, horizon),
    )  # fmt: skip
    policy = PolicyBundle(
        name=name, catalog=parts["catalog"], contact=parts["contact"], stages_config=config.stages,
        value=value, uplift=uplift, feature_names=names, feature_version=registry_version(registry),
        metadata={"train_waves": [str(w) for w in train_waves], "test_wave": str(test_wave),
                  "data_end": str(data_end), "scoring_models": scoring_models, "churn_horizon_days": horizon},
    )  # fmt: skip

    progress(f"policy: checking it on the held-out wave {test_wave}")
    scores = population_scores(test_rows, churn, upgrade, reactivation)
    p_churn, p_upgrade = scores.churn, scores.upgrade
    decisions = decide(test_rows, p_churn, p_upgrade, policy, churn_horizon_days=churn.horizon_days,
                       lapsed=scores.lapsed, return_probability=scores.returning)  # fmt: skip
    offered = decisions.arbitration.status != INELIGIBLE_STAGE
    effects = read_effects(truth_dir, test_wave)
    true_deltas = None if effects is None else effect_matrices(effects, test_rows["user_id"], policy.actions)
    quality = uplift_quality(policy, test_rows, true_deltas, offered)
    offline = offline_value(policy, test_rows, decisions)
    chosen = pd.Series(decisions.arbitration.chosen_names())
    share = {a: float((chosen == a).mean()) for a in (*policy.actions, NO_ACTION)}
    horizon_days = churn.horizon_days
    passed, behaviour_lines = behaviour_checks(policy, test_rows, p_churn, p_upgrade, horizon_days)
    champion_offline = _champion_offline(name, test_rows, p_churn, p_upgrade, horizon_days)

    progress("policy: logging to MLflow")
    # the uplift learners' own settings; the catalogue, stage rules, value and contact policy are in the
    # resolved config artifact
    run_params = {
        "target": "policy", "train_waves": [str(w) for w in train_waves], "test_wave": str(test_wave),
        "feature_version": policy.feature_version, "scoring_models": scoring_models,
        "actions": list(policy.actions), "uplift": dataclasses.asdict(parts["uplift"]),
    }  # fmt: skip
    description = policy_description(
        policy, train_rows, train_waves, test_wave, quality, offline, source=str(data_dir)
    )
    with tracking.start_training_run(
        config.training.experiment, f"policy-{test_wave}", params=run_params,
        tags={"clm.target": "policy", "clm.test_wave": str(test_wave)}, description=description,
    ) as run:  # fmt: skip
        tracking.log_metrics_flat(
            {"test": {"uplift": quality, "offline": offline.as_dict(), "action_share": share}}
        )
        tracking.log_metrics_flat({"behaviour_passed": float(passed)})
        if champion_offline is not None:
            tracking.log_metrics_flat({"champion_test": {"offline": champion_offline.as_dict()}})
        tracking.log_text("\n".join(behaviour_lines), "behaviour.txt")
        tracking.log_config(config)
        tracking.log_dict(uplift.diagnostics_, "uplift/diagnostics.json")
        tracking.log_frame(_quality_frame(quality), "metrics/uplift_quality.csv")
        registered = register_policy(
            policy, test_rows.head(5), p_churn[:5], p_upgrade[:5],
            tags={"clm.target": "policy", "clm.feature_version": policy.feature_version,
                  "clm.behaviour_passed": str(passed), "clm.test_wave": str(test_wave)},
            description=description,
        )  # fmt: skip
    return TrainedPolicy(
        registered_name=name, version=str(registered.version), run_id=run.info.run_id, train_waves=train_waves,
        test_wave=test_wave, quality=quality, offline=offline, action_share=share, behaviour_passed=passed,
        scoring_models=scoring_models,
    )  # fmt: skip


def policy_description(
    policy: PolicyBundle, train_rows: pd.DataFrame, train_waves: list[dt.date], test_wave: dt.date,
    quality: dict[str, dict[str, float]], offline: OfflineEstimate, *, source: str,
) -> str:  # fmt: skip
    """What the policy run fitted, on what, and its headline figure: the run's and the version's description."""
    modelled = [action for action, m in quality.items() if m.get("model")]
    return (
        f"{policy.name}: uplift per action and outcome ({len(modelled)} of {len(quality)} actions modelled, the "
        f"others on the catalogue's prior) with the stage rules, value and contact policy. Fitted on "
        f"{len(train_rows):,} logged decisions in {len(train_waves)} campaign waves {train_waves[0]}..{train_waves[-1]} "
        f"of {source}; features {policy.feature_version}. Held-out wave {test_wave}: offline value per 1,000 "
        f"logged users DR {offline.dr:,.0f} ± {offline.dr_se:,.0f}, IPS {offline.ips:,.0f} ± {offline.ips_se:,.0f}."
    )


def _quality_frame(quality: dict[str, dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"action": a, **m} for a, m in quality.items()])


def _champion_offline(
    name: str, rows: pd.DataFrame, p_churn: np.ndarray, p_upgrade: np.ndarray, horizon: int
) -> OfflineEstimate | None:
    """The current champion policy's offline value on the same held-out wave (for promotion)."""
    champion = tracking.version_by_alias(name, "champion")
    if champion is None:
        return None
    try:
        policy = load_policy(download_policy(champion.model_uri))
        decisions = decide(rows, p_churn, p_upgrade, policy, churn_horizon_days=horizon)
        return offline_value(policy, rows, decisions)
    except Exception as exc:  # a champion that cannot be evaluated here is reported, not fatal
        log.warning(
            "could not evaluate champion %s v%s on the held-out wave: %s", name, champion.version, exc
        )
        return None


def register_policy(
    policy: PolicyBundle, sample: pd.DataFrame, p_churn: np.ndarray, p_upgrade: np.ndarray, *,
    tags: dict[str, str], alias: str = "challenger", description: str | None = None,
) -> tracking.RegisteredVersion:  # fmt: skip
    """Log the policy as a pyfunc (input: features plus the two calibrated scores; output: one decision
    per row) and register it as a new version with `alias` and `description`."""
    from models.pyfunc_code import POLICY_MODEL_FILE

    with tempfile.TemporaryDirectory() as tmp:
        path = save_policy(policy, Path(tmp) / POLICY_ARTIFACT)
        example = sample[policy.feature_names].copy()
        example["churn_probability"] = p_churn
        example["upgrade_probability"] = p_upgrade
        categorical = [c for c in policy.uplift.categories_ if c in example]
        example = example.astype({c: "object" for c in categorical})
        return tracking.log_and_register_model(
            name="model", python_model=POLICY_MODEL_FILE, artifacts={POLICY_ARTIFACT: str(path)},
            signature=policy_signature(policy), input_example=example, registered_model_name=policy.name,
            alias=alias, tags=tags, version_description=description,
            model_description=(f"{policy.name}: the next best action per user — stage, value, uplift per action "
                               "and outcome, arbitration under the contact policy (the `policy` artifact). Versions "
                               "are registered @challenger by `clm train --model policy`; `clm promote` moves "
                               "@champion, which serving reads."),
        )  # fmt: skip


def policy_signature(policy: PolicyBundle):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    categorical = set(policy.uplift.categories_)
    inputs = Schema(
        [ColSpec("string" if n in categorical else "double", n, required=False) for n in policy.feature_names]
        + [ColSpec("double", "churn_probability"), ColSpec("double", "upgrade_probability")]
    )
    outputs = Schema(
        [ColSpec("string", "stage"), ColSpec("string", "action"), ColSpec("double", "expected_value"),
         ColSpec("double", "clv"), ColSpec("double", "propensity")]
    )  # fmt: skip
    return ModelSignature(inputs=inputs, outputs=outputs)


def policy_summary(result: TrainedPolicy) -> dict[str, Any]:
    """The JSON summary of a policy training run (`clm train --json`)."""
    return {
        "target": "policy", "model": result.registered_name, "version": result.version, "run_id": result.run_id,
        "train_waves": [str(w) for w in result.train_waves], "test_wave": str(result.test_wave),
        "uplift": result.quality, "offline": result.offline.as_dict(), "action_share": result.action_share,
        "behaviour_passed": result.behaviour_passed, "scoring_models": result.scoring_models,
    }  # fmt: skip
