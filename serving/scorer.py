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

from models.catalog import NO_ACTION
from models.frame import encode_row
from models.policy import decide
from models.scoring import contributions_matrix, score_matrix, top_reasons
from serving.config import ServingSection
from serving.schemas import Decision
from serving.state import ModelSet

MODEL_TARGETS = ("churn", "upgrade")


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

    def band(self, probability: float) -> str:
        low, high = self.band_thresholds
        return "low" if probability < low else "medium" if probability < high else "high"

    def explain(
        self, models: ModelSet, target: str, matrix: np.ndarray, values: Mapping[str, Any], lang: str
    ) -> dict:
        bundle = getattr(models, target)
        contrib = contributions_matrix(matrix, bundle)[0]
        top = top_reasons(contrib[:-1], bundle.feature_names, values, models.registry, self.top_k, lang)
        return {"base_value": float(contrib[-1]), "raw_score": float(contrib.sum()), "top": top}

    def decide(
        self,
        models: ModelSet,
        values: Mapping[str, Any],
        *,
        user_id: str | None,
        as_of: dt.date | None,
        lang: str = "en",
        rng: np.random.Generator | None = None,
    ) -> Decided:
        policy = models.policy
        names = policy.feature_names
        known = {name: values.get(name) for name in names}
        missing = [name for name, value in known.items() if value is None]
        probabilities, explanations = {}, {}
        for target in MODEL_TARGETS:
            bundle = getattr(models, target)
            matrix = encode_row(known, bundle.feature_names, bundle.categories)
            probabilities[target], _ = score_matrix(matrix, bundle)
            explanations[target] = self.explain(models, target, matrix, known, lang)
        columns = {name: [value] for name, value in known.items()}
        decisions = decide(
            columns, np.array([probabilities["churn"]]), np.array([probabilities["upgrade"]]), policy,
            churn_horizon_days=models.churn.horizon_days, rng=rng,
            uplift_matrix=policy.uplift.encode_row(known),
        )  # fmt: skip
        row = decisions.row(0)
        candidates = decisions.candidates(0, lang=lang)
        since_days = float(decisions.stages.since_days[0])
        since = None
        if as_of is not None and math.isfinite(since_days):
            since = as_of - dt.timedelta(days=int(since_days))
        action = str(row["action"])
        decision = Decision(
            user_id=user_id,
            as_of=as_of,
            stage={"name": row["stage"], "rule": row["stage_rule"], "since": since},
            churn={"probability": probabilities["churn"], "band": self.band(probabilities["churn"])},
            upgrade={"probability": probabilities["upgrade"], "value": float(row["upgrade_value"])},
            clv=float(row["clv"]),
            action={
                "name": action,
                "expected_value": float(row["expected_value"]),
                "uplift": float(row["uplift"]),
                "cost": float(row["cost"]),
                "channel": None if action == NO_ACTION else row["channel"],
                "source": None if action == NO_ACTION else row["uplift_source"],
                "propensity": float(row["propensity"]),
                "explored": bool(row["explored"]),
            },
            alternatives=[
                {k: c[k] for k in ("name", "status", "expected_value", "uplift", "cost", "source", "reason")}
                for c in candidates
            ],
            explanations=explanations,
            versions=models.version_labels(),
            decision_id=uuid.uuid4().hex,
            missing_features=missing,
        )
        return Decided(decision, known, candidates, float(row["propensity"]), bool(row["explored"]))
