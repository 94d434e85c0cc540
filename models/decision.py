"""The one decision path: the frozen set of decision models (churn and upgrade bundles, the policy, their
registry versions and the feature registry), the one loader that reads them from the MLflow registry by
alias, the one version-label format, and the one vectorised population decision (a frame of users in, a
per-user decision table out, optionally within a budget, optionally with seeded exploration).

`clm score`, `clm report`, the policy evaluation, the reviewer overview and the demo all decide through
`decide_population`; the API's one-row decision (`serving.scorer.Scorer`) wires the same `models.policy.decide`
on one encoded row, and a test holds the two equal on every user of a trained world."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.registry import Feature, FeatureParams, build_registry, by_name, registry_version
from models.arbitration import ELIGIBLE, BudgetPlan, ExplorationKey, control_group, plan_within_budget
from models.bundle import ModelBundle, load_bundle
from models.config import ModelsConfig
from models.policy import Decisions, PolicyBundle, decide, load_policy
from models.population import CHURN_POPULATION, REACTIVATION_POPULATION, in_population
from models.scoring import score

log = logging.getLogger(__name__)

TARGETS = ("churn", "upgrade", "policy")
SCORING_TARGETS = ("churn", "upgrade")
OPTIONAL_TARGETS = ("reactivation",)  # a set without one still decides, saying so (`fallback_note`)
DEFAULT_ALIASES = ("champion", "challenger")


class ModelsMissing(ValueError):
    """No churn model, upgrade model or policy registered under the aliases asked for."""


def version_label(name: str, version: str) -> str:
    """The one way a registered version is written: `clm-churn/3` (the API's versions block)."""
    return f"{name}/{version}"


@dataclass(frozen=True)
class DecisionModels:
    """What decides: both scoring models and the policy at known registry versions. Immutable, so a
    request (or a batch run) keeps the set it started with while a reload swaps in another."""

    churn: ModelBundle
    upgrade: ModelBundle | None  # None only when loaded with the upgrade model optional and none registered
    policy: PolicyBundle  # the catalogue's priors (unregistered) when loaded with the policy optional
    versions: dict[str, str]  # registered name → version number (the registered ones)
    alias: str  # the alias asked for (the first one, when several were tried)
    registry: dict[str, Feature]
    loaded_at: float = field(default_factory=time.time)
    found_under: dict[str, str] = field(default_factory=dict)  # registered name → alias it was found under
    reactivation: ModelBundle | None = None  # scores the lapsed users; None: the churn model does, said so

    def label(self, bundle: ModelBundle | PolicyBundle | None) -> str:
        if bundle is None:
            return "none"
        if bundle.name not in self.versions:
            return f"{bundle.name} ({PRIOR_POLICY_LABEL})"
        return version_label(bundle.name, self.versions[bundle.name])

    def version_labels(self) -> dict[str, str | None]:
        """The versions block of a decision."""
        return {
            "churn_model": self.label(self.churn),
            "upgrade_model": self.label(self.upgrade),
            "reactivation_model": None if self.reactivation is None else self.label(self.reactivation),
            "policy": self.label(self.policy),
            "features": self.churn.feature_version,
        }

    def scored_by_label(self, scored_by: str) -> str:
        """Which registered model gave a user's churn probability: `clm-churn/3`, `clm-reactivation/1`, or
        the churn model with the note that it scores a lapsed user outside its population."""
        if scored_by == "reactivation" and self.reactivation is not None:
            return self.label(self.reactivation)
        return self.label(self.churn)

    def fallback_note(self, lapsed: bool, lang: str = "en") -> str | None:
        """Why a lapsed user's score comes from the churn model, when it does."""
        if lapsed and self.reactivation is None and self.churn.metadata.get("population") == CHURN_POPULATION:
            if lang == "zh":
                return (
                    "没有注册回流模型：该流失用户由流失模型评分，超出其训练人群"
                    "（用 `clm train --model reactivation` 训练回流模型）"
                )
            return (
                "no reactivation model is registered: this lapsed user is scored by the churn model, "
                "outside the population it was trained on (train with `clm train --model reactivation`)"
            )
        return None

    def described(self, bundle: ModelBundle | PolicyBundle | None) -> str:
        """The version label with the alias beside it, for CLI output and run parameters."""
        if bundle is None or bundle.name not in self.versions:
            return self.label(bundle)
        alias = self.found_under.get(bundle.name, self.alias)
        return f"{self.label(bundle)} @{alias}"

    def scoring_labels(self) -> dict[str, str]:
        """The scoring models' described labels by target (what a policy evaluation records)."""
        return {"churn": self.described(self.churn), "upgrade": self.described(self.upgrade)}

    def missing_notes(self) -> list[str]:
        """What the output should say about the models that are not registered."""
        notes = []
        if self.upgrade is None:
            notes.append("no upgrade model registered: upgrade probabilities are left blank")
        if self.policy.name not in self.versions:
            notes.append(
                f"no {self.policy.name} registered: actions are valued with the catalogue's prior effects "
                "([actions.*] prior_delta_*)"
            )
        return notes

    def decide(
        self,
        frame: pd.DataFrame,
        *,
        budget: float | None = None,
        budget_method: str = "lagrangian",
        rng: np.random.Generator | None = None,
        explore: bool = False,
        num_threads: int = 0,
    ) -> PopulationDecision:
        """`decide_population` with this set; `explore` draws exploration by the hash of (user, cutoff,
        policy version, salt) — the same draws serving makes."""
        return decide_population(
            frame, self.churn, self.upgrade, self.policy, budget=budget, budget_method=budget_method, rng=rng,
            reactivation=self.reactivation, exploration_version=self.label(self.policy) if explore else None,
            num_threads=num_threads,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------------------
# The population decision


@dataclass(frozen=True)
class PopulationDecision:
    """Every user's decision: `table` (user_id, cutoff when the frame has one, then the policy's decision
    columns, and `budget_dropped` with a budget), the `decisions` behind it (one snapshot only) and the
    budget `plan` when one was asked for."""

    table: pd.DataFrame
    decisions: Decisions | None
    plan: BudgetPlan | None = None


@dataclass(frozen=True)
class Scores:
    """Each user's calibrated probabilities and which model gave the churn one."""

    churn: np.ndarray  # p(churn); 1 − p(return) for lapsed users
    upgrade: np.ndarray
    lapsed: np.ndarray  # bool: scored by the reactivation model
    returning: np.ndarray  # p(return within the horizon) where lapsed, NaN elsewhere


def probabilities(
    frame: pd.DataFrame, churn: ModelBundle, upgrade: ModelBundle | None, *, num_threads: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated churn and upgrade probability per row of `frame` (upgrade NaN without an upgrade model);
    `num_threads` LightGBM threads (0: its default)."""
    p_upgrade = (
        np.full(len(frame), np.nan)
        if upgrade is None
        else score(frame, upgrade, num_threads=num_threads)["probability"].to_numpy()
    )
    return score(frame, churn, num_threads=num_threads)["probability"].to_numpy(), p_upgrade


def population_scores(
    frame: pd.DataFrame,
    churn: ModelBundle,
    upgrade: ModelBundle | None,
    reactivation: ModelBundle | None,
    *,
    num_threads: int = 0,
) -> Scores:
    """The churn model scores the users of its training population; the lapsed ones (models.population),
    when the churn model left them out of training and a reactivation model exists, get p(return) from it
    and p(churn) = 1 − p(return)."""
    p_churn, p_upgrade = probabilities(frame, churn, upgrade, num_threads=num_threads)
    n = len(frame)
    lapsed = np.zeros(n, dtype=bool)
    returning = np.full(n, np.nan)
    if reactivation is not None and churn.metadata.get("population") == CHURN_POPULATION:
        lapsed = in_population(frame, REACTIVATION_POPULATION, churn.horizon_days)
        if lapsed.any():
            returning[lapsed] = score(frame[lapsed], reactivation, num_threads=num_threads)[
                "probability"
            ].to_numpy()
            p_churn = np.where(lapsed, 1.0 - returning, p_churn)
    return Scores(p_churn, p_upgrade, lapsed, returning)


def plan_budget(decisions: Decisions, budget: float, method: str = "lagrangian") -> BudgetPlan:
    """The contacts that pay most within `budget`: among each user's eligible actions, by the policy's
    expected values and the catalog's costs."""
    arb = decisions.arbitration
    costs = np.array([a.cost for a in decisions.policy.catalog])
    return plan_within_budget(arb.value, arb.status == ELIGIBLE, costs, budget, method=method)


def decide_population(
    frame: pd.DataFrame,
    churn: ModelBundle,
    upgrade: ModelBundle | None,
    policy: PolicyBundle,
    *,
    budget: float | None = None,
    budget_method: str = "lagrangian",
    rng: np.random.Generator | None = None,
    scores: tuple[np.ndarray, np.ndarray] | Scores | None = None,
    reactivation: ModelBundle | None = None,
    exploration_version: str | None = None,
    num_threads: int = 0,
) -> PopulationDecision:
    """One decision per row of `frame` (registry features; a `cutoff` column is kept as a key, and several
    cutoffs are decided apart, since the contact state and exploration are per snapshot). `budget`
    replaces the policy's choice by the plan within it (deterministic: no exploration; one snapshot only);
    `rng` enables the configured exploration; `scores` (churn, upgrade probabilities) skips scoring when
    the caller has them already (a pair: the churn model for everyone); `reactivation` scores the lapsed
    users (`population_scores`); `exploration_version` (the policy's version label) draws exploration by the
    hash of (user, cutoff, policy version, salt), deterministic, as serving does (`rng`: random draws);
    `num_threads`: LightGBM threads of every model (0: its default; a Spark task gives its `spark.task.cpus`)."""
    if scores is None:
        scores = population_scores(frame, churn, upgrade, reactivation, num_threads=num_threads)
    elif not isinstance(scores, Scores):
        n = len(frame)
        scores = Scores(
            np.asarray(scores[0], float), np.asarray(scores[1], float), np.zeros(n, bool), np.full(n, np.nan)
        )
    p_churn, p_upgrade = scores.churn, scores.upgrade
    horizon = churn.horizon_days

    def exploration(part: pd.DataFrame) -> ExplorationKey | None:
        if exploration_version is None:
            return None
        snapshot = str(part["cutoff"].iloc[0]) if "cutoff" in part and len(part) else ""
        return ExplorationKey(snapshot, exploration_version, policy.contact.exploration_salt)

    keys = {"user_id": frame["user_id"].astype(str).to_numpy()}
    if "cutoff" in frame:
        keys["cutoff"] = frame["cutoff"].to_numpy()
    if "cutoff" in frame and frame["cutoff"].nunique() > 1:
        if budget is not None:
            raise ValueError("a budget plans one snapshot: the frame has several cutoffs")
        parts = []
        for _, index in frame.groupby("cutoff", sort=True).indices.items():
            part = frame.iloc[index].reset_index(drop=True)
            decisions = decide(part, p_churn[index], p_upgrade[index], policy, churn_horizon_days=horizon, rng=rng,
                               lapsed=scores.lapsed[index], return_probability=scores.returning[index],
                               exploration=exploration(part), num_threads=num_threads)  # fmt: skip
            parts.append(decisions.to_frame().set_axis(index))
        table = pd.concat(parts).sort_index().reset_index(drop=True)
        return PopulationDecision(pd.concat([pd.DataFrame(keys), table], axis=1), None)
    frame = frame.reset_index(drop=True)
    held_out = None  # a budget plan does not explore, but holds the control group out all the same
    if budget is not None and exploration_version is not None:
        contact = policy.contact
        held_out = control_group(keys["user_id"].tolist(), contact.control_share, contact.control_salt)
    decisions = decide(frame, p_churn, p_upgrade, policy, churn_horizon_days=horizon,
                       rng=None if budget is not None else rng, lapsed=scores.lapsed,
                       return_probability=scores.returning, held_out=held_out, num_threads=num_threads,
                       exploration=None if budget is not None else exploration(frame))  # fmt: skip
    plan = None
    if budget is None:
        table = decisions.to_frame()
    else:
        plan = plan_budget(decisions, budget, budget_method)
        table = decisions.to_frame(chosen=plan.chosen)
        table["budget_dropped"] = (decisions.arbitration.greedy >= 0) & (plan.chosen < 0)
    return PopulationDecision(pd.concat([pd.DataFrame(keys), table], axis=1), decisions, plan)


# --------------------------------------------------------------------------------------------------------
# The one loader (the only code that reads the MLflow registry for scoring)


def registered_names(config: ModelsConfig, targets: Sequence[str] = TARGETS) -> dict[str, str]:
    """Target → registered model name, from the config's `models` section."""
    return {target: config.models.registered_name(target) for target in targets}


def load_reactivation(config: ModelsConfig, aliases: Sequence[str] = DEFAULT_ALIASES) -> ModelBundle | None:
    """The reactivation model under the first of `aliases` it has, or None (logged) when none is registered."""
    names = registered_names(config, OPTIONAL_TARGETS)
    try:
        versions, _ = find_versions(names, aliases)
    except ModelsMissing:
        log.warning("no reactivation model registered: lapsed users are scored by the churn model")
        return None
    name = names["reactivation"]
    bundle = load_bundle(_download(name, versions[name], "bundle"))
    check_identity(bundle, name=name, version=versions[name], target="reactivation", feature_version=None)
    return bundle


def feature_registry(config: ModelsConfig) -> dict[str, Feature]:
    return by_name(build_registry(FeatureParams.from_config(config.features)))


def find_versions(
    names: Mapping[str, str], aliases: Sequence[str] = DEFAULT_ALIASES, *, optional: Sequence[str] = ()
) -> tuple[dict[str, str], dict[str, str]]:
    """Registered name → version and registered name → alias, each model taken under the first of
    `aliases` it has. Raises ModelsMissing naming the model and the command that trains it, unless its
    target is `optional` (then it is left out)."""
    from models.registry import version_by_alias

    versions: dict[str, str] = {}
    found_under: dict[str, str] = {}
    for target, name in names.items():
        for alias in aliases:
            version = version_by_alias(name, alias)
            if version is not None:
                versions[name], found_under[name] = version, alias
                break
        else:
            if target in optional:
                continue
            what = f"{name} model" if target in SCORING_TARGETS else name
            raise ModelsMissing(
                f"no {what} registered (@{' or @'.join(aliases)}): run `clm train --model {target}` first"
            )
    return versions, found_under


def _download(name: str, version: str, artifact: str):
    from models.registry import download_verified

    return download_verified(name, version, artifact)


def check_identity(
    bundle: ModelBundle | PolicyBundle, *, name: str, version: str, target: str, feature_version: str | None
) -> None:
    """What `models:/name/version` holds is what it is loaded for: the bundle's own name and target (a
    policy: its name) and the feature version of the set. ArtifactRefused naming both sides otherwise."""
    from models.artifacts import ArtifactRefused

    where = f"models:/{name}/{version}"
    held_target = getattr(bundle, "target", "policy")
    if bundle.name != name or held_target != target:
        raise ArtifactRefused(
            f"{where} holds {bundle.name!r} (target {held_target}), not the {target} model {name!r} it is "
            "registered and loaded as: refused"
        )
    if feature_version is not None and bundle.feature_version != feature_version:
        raise ArtifactRefused(
            f"feature versions differ: {where} has {bundle.feature_version}, the churn model has {feature_version}"
        )


def load_bundles(
    config: ModelsConfig, aliases: Sequence[str] = DEFAULT_ALIASES, *, optional: Sequence[str] = ()
) -> tuple[ModelBundle, ModelBundle | None, dict[str, str]]:
    """The churn and upgrade models alone (what the policy job scores with before a policy exists) and
    their described labels by target (`clm-churn/3 @champion`); the upgrade model None when it is
    `optional` and not registered."""
    names = registered_names(config, SCORING_TARGETS)
    versions, found_under = find_versions(names, aliases, optional=optional)
    churn, upgrade = (
        load_bundle(_download(names[t], versions[names[t]], "bundle")) if names[t] in versions else None
        for t in SCORING_TARGETS
    )
    assert churn is not None
    check_identity(
        churn, name=names["churn"], version=versions[names["churn"]], target="churn", feature_version=None
    )
    if upgrade is not None:
        check_identity(upgrade, name=names["upgrade"], version=versions[names["upgrade"]], target="upgrade",
                       feature_version=churn.feature_version)  # fmt: skip
    labels = {
        t: f"{version_label(names[t], versions[names[t]])} @{found_under[names[t]]}" if names[t] in versions
        else "none"
        for t in names
    }  # fmt: skip
    return churn, upgrade, labels


PRIOR_POLICY_LABEL = "catalogue priors, not registered"


def prior_policy(
    config: ModelsConfig, registry: Mapping[str, Feature] | None = None, *, name: str | None = None
) -> PolicyBundle:
    """The policy without campaign history: the config's stage rules, value parameters, catalogue and contact
    policy, every action's effect its catalogue prior (`source = prior`)."""
    from models.catalog import ContactPolicy, load_catalog
    from models.uplift import UpliftModel, UpliftParams
    from models.value import ValueParams

    features = dict(registry) if registry is not None else feature_registry(config)
    names = list(features)
    catalog = load_catalog(config.actions)
    priors = {a.name: {"churn": a.prior_delta_churn, "upgrade": a.prior_delta_upgrade} for a in catalog}
    uplift = UpliftModel(UpliftParams.from_config(config.policy), priors)
    empty = pd.DataFrame({n: pd.Series(dtype="float64") for n in names})
    uplift.fit(empty, np.array([], dtype=object), None, {"churn": np.array([]), "upgrade": np.array([])})
    return PolicyBundle(
        name=name or config.models.registered_name("policy"), catalog=catalog,
        contact=ContactPolicy.from_config(config.policy), stages_config=config.stages,
        value=ValueParams.from_config(config.value, config.features), uplift=uplift, feature_names=names,
        feature_version=registry_version(list(features.values())), metadata={"source": PRIOR_POLICY_LABEL},
    )  # fmt: skip


def load_exact_versions(
    config: ModelsConfig,
    versions: Mapping[str, str],
    alias: str,
    *,
    found_under: Mapping[str, str] | None = None,
    registry: dict[str, Feature] | None = None,
    probe: Callable[[Mapping[str, Path]], None] | None = None,
) -> DecisionModels:
    """The decision models at exact versions (registered name → version), e.g. to replay a logged
    decision. Every artifact's checksums are checked against its registration; `probe` (e.g.
    `models.artifacts.probe_in_subprocess`) gets every downloaded directory (by `models:/NAME/VERSION`) before
    anything is loaded here.
    Raises ValueError (ArtifactRefused) when an artifact differs from its checksums, holds another target
    or name than the one it is registered as, or was built on other features than the churn model."""
    names = registered_names(config)
    registry = registry if registry is not None else feature_registry(config)
    optional = registered_names(config, OPTIONAL_TARGETS).get("reactivation")
    wanted = {target: names[target] for target in TARGETS if names[target] in versions}
    if optional is not None and optional in versions:
        wanted["reactivation"] = optional
    elif optional is not None:
        log.warning("no %s model registered: lapsed users are scored by the churn model", optional)
    paths = {
        target: _download(name, str(versions[name]), "policy" if target == "policy" else "bundle")
        for target, name in wanted.items()
    }
    if probe is not None:
        probe(
            {f"models:/{wanted[target]}/{versions[wanted[target]]}": path for target, path in paths.items()}
        )
    churn = load_bundle(paths["churn"])
    check_identity(churn, name=names["churn"], version=str(versions[names["churn"]]), target="churn",
                   feature_version=None)  # fmt: skip
    loaded: dict[str, ModelBundle | PolicyBundle] = {"churn": churn}
    for target in ("upgrade", "reactivation", "policy"):
        if target in paths:
            bundle = load_policy(paths[target]) if target == "policy" else load_bundle(paths[target])
            check_identity(bundle, name=wanted[target], version=str(versions[wanted[target]]), target=target,
                           feature_version=churn.feature_version)  # fmt: skip
            loaded[target] = bundle
    policy = loaded.get("policy") or prior_policy(config, registry)
    if churn.feature_version != policy.feature_version:
        raise ValueError(
            f"feature versions differ: models:/{names['churn']}/{versions[names['churn']]} has "
            f"{churn.feature_version}, the catalogue priors' registry has {policy.feature_version}"
        )
    return DecisionModels(
        churn, loaded.get("upgrade"), policy, {n: str(v) for n, v in versions.items()}, alias, registry,
        found_under=dict(found_under or {}), reactivation=loaded.get("reactivation"),
    )  # fmt: skip


def load_decision_models(
    config: ModelsConfig,
    aliases: Sequence[str] = DEFAULT_ALIASES,
    *,
    registry: dict[str, Feature] | None = None,
    optional: Sequence[str] = (),
) -> DecisionModels:
    """The churn and upgrade models and the policy, each under the first of `aliases` it is registered
    with (ModelsMissing naming the one that is not). Targets in `optional` ("upgrade", "policy") may be
    missing: no upgrade model, and the catalogue's priors for the policy. A registered reactivation model
    joins when there is one (it scores the lapsed users)."""
    versions, found_under = find_versions(registered_names(config), aliases, optional=optional)
    # load_exact_versions says when there is none; the set decides without it
    more, more_under = find_versions(
        registered_names(config, OPTIONAL_TARGETS), aliases, optional=OPTIONAL_TARGETS
    )
    versions, found_under = {**versions, **more}, {**found_under, **more_under}
    return load_exact_versions(config, versions, aliases[0], found_under=found_under, registry=registry)


__all__ = [
    "DecisionModels",
    "ModelsMissing",
    "PopulationDecision",
    "decide_population",
    "find_versions",
    "load_bundles",
    "load_decision_models",
    "load_exact_versions",
    "load_reactivation",
    "plan_budget",
    "population_scores",
    "prior_policy",
    "probabilities",
    "version_label",
]
