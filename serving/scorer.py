"""One decision for one feature vector: both models' calibrated probabilities and exact TreeSHAP, the
policy's stage, value and arbitration, assembled into the Decision contract. Business rules live in
`models`; this only wires them for the request path (numpy rows, one thread, no pandas encoding)."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.contacts import contacts_column, days_since_column, negative_outcomes_column
from models.arbitration import ExplorationKey
from models.catalog import NO_ACTION, contact_windows
from models.frame import encode_row
from models.policy import Decisions, decide
from models.population import CHURN_POPULATION, lapsed
from models.scoring import contributions_matrix, reasons_at, score_matrix, top_order
from models.snapshot import snapshot_age, utc_today
from serving.config import ServingSection
from serving.schemas import Decision, Snapshot, ValueTerms
from serving.state import ModelSet

MODEL_TARGETS = ("churn", "upgrade")


def contact_columns(policy: Any) -> list[str]:
    """The per-action contact columns (features.contacts: days since each action, its contacts per window, its
    negative outcomes) a decision's inputs may carry beside the features: the snapshot's contact state in the
    online store, updated with what was logged since (serving.cache.Contacts)."""
    windows = contact_windows(policy.contact, policy.catalog)
    return [column for a in policy.actions for column in (
        days_since_column(a), *(contacts_column(a, w) for w in windows), negative_outcomes_column(a))]  # fmt: skip


def with_contact_columns(known: dict[str, Any], values: Mapping[str, Any], policy: Any) -> dict[str, Any]:
    """The features a decision was made from and the contact state it read (what the log keeps as its inputs,
    so a replay or a re-decision after a contact starts from the same state)."""
    found = {column: values[column] for column in contact_columns(policy) if values.get(column) is not None}
    return {**known, **found} if found else known


TERM_KEYS = tuple(ValueTerms.model_fields)


@dataclass
class Decided:
    """A decision and what the log keeps beside it."""

    decision: Decision
    inputs: dict[str, Any]
    candidates: list[dict[str, Any]]
    propensity: float
    explored: bool


class Scorer:
    def __init__(self, serving: ServingSection) -> None:
        self.band_thresholds = tuple(serving.churn_band_thresholds)
        self.top_k = serving.explain_top_k
        self.stale_after_days = serving.stale_after_days
        self.today = utc_today  # the clock of a snapshot's age (a test sets its own)

    def snapshot(self, as_of: dt.date | None, lang: str) -> dict[str, Any] | None:
        """The age of the snapshot of `as_of` today, with the warning past `stale_after_days`."""
        if as_of is None:
            return None
        return snapshot_age(as_of, self.today(), self.stale_after_days, lang).as_dict()

    def snapshot_json(self, as_of: dt.date, lang: str) -> bytes:
        """`snapshot` as the Decision's JSON encodes it: what replaces a cached body's (serving.cache)."""
        return Snapshot.__pydantic_serializer__.to_json(Snapshot(**self.snapshot(as_of, lang)))  # type: ignore[arg-type]

    def band(self, probability: float) -> str:
        low, high = self.band_thresholds
        return "low" if probability < low else "medium" if probability < high else "high"

    def explain(
        self, models: ModelSet, target: str, matrix: np.ndarray, values: Mapping[str, Any], lang: str
    ) -> dict:
        bundle = getattr(models, target)  # churn, upgrade or reactivation
        contrib = contributions_matrix(matrix, bundle)[0]
        return self.explanation(contrib, top_order(contrib[:-1], self.top_k)[0], bundle, values, models, lang)

    def explanation(
        self,
        contrib: np.ndarray,
        order: np.ndarray,
        bundle: Any,
        values: Mapping[str, Any],
        models: ModelSet,
        lang: str,
    ) -> dict:
        """One model's explanation from a row of TreeSHAP contributions (base value last) and its top order."""
        top = reasons_at(order, contrib[:-1], bundle.feature_names, values, models.registry, lang,
                         models.policy.value.currency)  # fmt: skip
        return {"base_value": float(contrib[-1]), "raw_score": float(contrib.sum()), "top": top}

    def decide(
        self,
        models: ModelSet,
        values: Mapping[str, Any],
        *,
        user_id: str | None,
        as_of: dt.date | None,
        lang: str = "en",
        explore: bool = False,
        request_key: str | None = None,
    ) -> Decided:
        """`explore`: the configured share of decisions explores, the draw a hash of (user — or
        `request_key` for a posted vector —, snapshot date, policy version, salt): deterministic."""
        policy = models.policy
        names = policy.feature_names
        known = {name: values.get(name) for name in names}
        missing = [name for name, value in known.items() if value is None]
        probabilities, explanations = {}, {}
        matrices = {}
        for target in MODEL_TARGETS:
            bundle = getattr(models, target)
            matrices[target] = encode_row(known, bundle.feature_names, bundle.categories)
            probabilities[target], _ = score_matrix(matrices[target], bundle)
        inputs = with_contact_columns(known, values, policy)  # each action's contact history, when known
        columns = {name: [value] for name, value in inputs.items()}
        gone = bool(lapsed(columns, models.churn.horizon_days)[0])
        returning = None
        scored_by = "churn"
        if (
            gone
            and models.reactivation is not None
            and models.churn.metadata.get("population") == CHURN_POPULATION
        ):
            bundle = models.reactivation
            matrix = encode_row(known, bundle.feature_names, bundle.categories)
            returning, _ = score_matrix(matrix, bundle)
            probabilities["churn"] = 1.0 - returning
            explanations["reactivation"] = self.explain(models, "reactivation", matrix, known, lang)
            scored_by = "reactivation"
        for target in MODEL_TARGETS:  # the churn model's view stays beside the reactivation model's
            explanations[target] = self.explain(models, target, matrices[target], known, lang)
        exploration = None
        if explore:
            exploration = ExplorationKey("" if as_of is None else str(as_of), models.label(policy),
                                         policy.contact.exploration_salt)  # fmt: skip
        decisions = decide(
            columns, np.array([probabilities["churn"]]), np.array([probabilities["upgrade"]]), policy,
            churn_horizon_days=models.churn.horizon_days, uplift_matrix=policy.uplift.encode_row(known),
            lapsed=np.array([scored_by == "reactivation"]),
            return_probability=np.array([np.nan if returning is None else returning]),
            exploration=exploration, user_ids=[user_id if user_id is not None else request_key or ""],
            held_out=None if user_id is not None else np.zeros(1, dtype=bool),  # no user, no control group
        )  # fmt: skip
        return self.assemble(
            models, decisions, decisions.columns(), 0, explanations=explanations, gone=gone, missing=missing,
            known=inputs, user_id=user_id, as_of=as_of, lang=lang, decision_id=uuid.uuid4().hex,
        )  # fmt: skip

    def assemble(
        self,
        models: ModelSet,
        decisions: Decisions,
        columns: Mapping[str, np.ndarray],
        i: int,
        *,
        explanations: dict[str, dict],
        gone: bool,
        missing: list[str],
        known: dict[str, Any],
        user_id: str | None,
        as_of: dt.date | None,
        lang: str,
        decision_id: str,
    ) -> Decided:
        """User i of `decisions` (one row on the request path, a population in bulk — `columns` is
        `decisions.columns()`, computed once) as the Decision contract: the one assembly both share."""
        policy = models.policy
        row = {k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in columns.items()}
        candidates = decisions.candidates(i, lang=lang)
        p_churn, p_upgrade = float(decisions.churn_probability[i]), float(decisions.upgrade_probability[i])
        scored_by = "reactivation" if decisions.lapsed[i] else "churn"
        returning = float(decisions.return_probability[i]) if scored_by == "reactivation" else None
        since_days = float(decisions.stages.since_days[i])
        since = None
        if as_of is not None and math.isfinite(since_days):
            since = as_of - dt.timedelta(days=int(since_days))
        action = str(row["action"])
        chosen = next(c for c in candidates if c["name"] == action)
        currency = policy.value.currency
        value_row = decisions.values
        decision = Decision(
            user_id=user_id,
            as_of=as_of,
            stage={
                "name": row["stage"],
                "rule": policy.stage_rules.text_at(int(decisions.stages.rule_index[i]), lang),
                "since": since,
            },
            churn={
                "probability": p_churn,
                "band": self.band(p_churn),
                "scored_by": models.scored_by_label(scored_by),
                "return_probability": returning,
                "note": models.fallback_note(gone, lang),
            },
            upgrade={"probability": p_upgrade, "value": float(row["upgrade_value"])},
            clv=float(row["clv"]),
            value={
                "currency": currency,
                "value_if_retained": float(row["value_if_retained"]),
                "margin_if_retained_month": float(value_row["margin_if_retained"][i]),
                "retained_churn_month": float(value_row["retained_churn_month"][i]),
                "upgrade_value": float(row["upgrade_value"]),
                "clv": float(row["clv"]),
            },
            action={
                **{k: chosen[k] for k in TERM_KEYS},
                "name": action,
                "channel": None if action == NO_ACTION else row["channel"],
                "propensity": float(row["propensity"]),
                "explored": bool(row["explored"]),
                "control_group": bool(row["control_group"]),
                "holdout": row["holdout"],
                "intended_action": str(row["intended_action"]),
            },
            alternatives=[{k: c[k] for k in ("name", "status", "reason", *TERM_KEYS)} for c in candidates],
            explanations=explanations,
            versions=models.version_labels(),
            decision_id=decision_id,
            missing_features=missing,
            snapshot=self.snapshot(as_of, lang),
        )
        return Decided(decision, known, candidates, float(row["propensity"]), bool(row["explored"]))
