"""The churn, upgrade and reactivation models' pyfunc, logged as code: MLflow runs this file to build the
model (so nothing is pickled); the `bundle` artifact holds the booster and the calibrator."""

from mlflow.models import set_model

from models.pyfunc import ClmPyfuncModel

set_model(ClmPyfuncModel())
