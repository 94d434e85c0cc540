"""Model files MLflow logs as code ("models from code"): each one names the pyfunc it serves with
`mlflow.models.set_model`. MLflow runs the file when logging and when loading; nothing here imports them."""

from pathlib import Path

SCORING_MODEL_FILE = Path(__file__).with_name("scoring_model.py")
POLICY_MODEL_FILE = Path(__file__).with_name("policy_model.py")
