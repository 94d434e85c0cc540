"""The MLflow pyfunc face of a model bundle: `predict` returns calibrated probabilities, not labels."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from models.bundle import load_bundle
from models.scoring import score


class ClmPyfuncModel(mlflow.pyfunc.PythonModel):
    """Loads the bundle from the `bundle` artifact; predict → probability, uncalibrated, raw_score."""

    def load_context(self, context: Any) -> None:
        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return score(pd.DataFrame(model_input), self.bundle)


class ClmPolicyPyfuncModel(mlflow.pyfunc.PythonModel):
    """Loads the policy from the `policy` artifact; predict takes registry features plus
    `churn_probability` and `upgrade_probability` and returns one deterministic decision per row."""

    def load_context(self, context: Any) -> None:
        from models.policy import load_policy

        self.policy = load_policy(context.artifacts["policy"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from models.policy import decide

        frame = pd.DataFrame(model_input)
        horizon = int(self.policy.metadata.get("churn_horizon_days", 30))
        decisions = decide(
            frame,
            frame["churn_probability"].to_numpy(dtype=float),
            frame["upgrade_probability"].to_numpy(dtype=float),
            self.policy,
            churn_horizon_days=horizon,
        )
        return decisions.to_frame()
