"""The policy's pyfunc, logged as code: MLflow runs this file to build the model (so nothing is pickled);
the `policy` artifact holds the rules, the value parameters, the catalogue and the uplift boosters."""

from mlflow.models import set_model

from models.pyfunc import ClmPolicyPyfuncModel

set_model(ClmPolicyPyfuncModel())
