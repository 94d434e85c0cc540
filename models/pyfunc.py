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
