"""What a browser of the MLflow store sees after a full training (the session's trained world: churn, upgrade,
reactivation and the policy, registered and promoted as `make demo` does on a 5,000-user world): a few dozen
params per run, a description on every run, registered model and version, the resolved config as one
artifact, no fold counts among the metrics, no empty experiment, and models logged as code."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from clm.config import load_config
from tests.conftest import ServedWorld, mlflow_store
from training import tracking

MAX_PARAMS_PER_RUN = 40
TARGETS = {"churn", "upgrade", "reactivation", "policy"}


@pytest.fixture(scope="module")
def client(served_world: ServedWorld) -> MlflowClient:
    return MlflowClient(tracking_uri=served_world.tracking_uri, registry_uri=served_world.tracking_uri)


@pytest.fixture(scope="module")
def model_runs(client: MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = [
        r
        for r in client.search_runs(experiments, max_results=1000)
        if r.data.tags.get("clm.target") in TARGETS
    ]
    assert {r.data.tags["clm.target"] for r in runs} == TARGETS
    return runs


def test_each_model_run_has_few_params_a_description_and_the_config_artifact(
    served_world: ServedWorld, client: MlflowClient, model_runs: list
) -> None:
    resolved = json.loads(json.dumps(load_config().as_dict(), default=str))
    for run in model_runs:
        target = run.data.tags["clm.target"]
        assert len(run.data.params) <= MAX_PARAMS_PER_RUN, (target, sorted(run.data.params))
        # the model's own settings are params; the catalogue, stage rules and the rest are in the artifact
        assert not any(key.startswith(("actions.", "stages.", "value.", "config")) for key in run.data.params)
        description = run.data.tags.get("mlflow.note.content", "")
        assert f"clm-{target}" in description and ("Trained on" in description or "Fitted on" in description)
        assert str(served_world.data) in description, description
        with mlflow_store(served_world.tracking_uri):
            config = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{tracking.CONFIG_ARTIFACT}")
        assert config == resolved
        assert not [name for name in run.data.metrics if name.endswith(".n")], target


def test_model_runs_keep_the_metrics_promotion_and_the_model_card_read(model_runs: list) -> None:
    for run in model_runs:
        metrics = run.data.metrics
        if run.data.tags["clm.target"] == "policy":
            assert {"test.offline.dr", "behaviour_passed"} <= set(metrics)
            continue
        assert {"backtest.roc_auc.mean", "backtest.roc_auc.std", "test.model.roc_auc", "test.model.ece",
                "test.logistic.roc_auc", "backtest_baselines.logistic.roc_auc.mean", "backtest_folds",
                "behaviour_passed"} <= set(metrics)  # fmt: skip
        assert len(metrics) < 120, (run.data.tags["clm.target"], len(metrics))


def test_registered_models_and_versions_are_described_and_logged_as_code(
    served_world: ServedWorld, client: MlflowClient, model_runs: list
) -> None:
    runs = {run.info.run_id: run for run in model_runs}
    for model in client.search_registered_models():
        assert model.description and model.name in model.description, model.name
        for version in client.search_model_versions(f"name = '{model.name}'"):
            # the version says what its run says: what was trained, on what, the headline figure
            assert version.description == runs[version.run_id].data.tags["mlflow.note.content"]
            with mlflow_store(served_world.tracking_uri):
                info = mlflow.models.get_model_info(f"models:/{model.name}/{version.version}")
            assert info.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"


def test_the_store_has_no_empty_experiment(client: MlflowClient) -> None:
    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    assert experiments
    for experiment in experiments:
        assert client.search_runs([experiment.experiment_id], max_results=1), experiment.name
