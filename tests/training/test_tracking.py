"""The MLflow layer against a real SQLite store: runs, flattened params/metrics, artifacts, registry, promotion."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.tracking._model_registry import utils as registry_uri_state
from mlflow.tracking._tracking_service import utils as tracking_uri_state

from tests.conftest import mlflow_store, new_store
from training import tracking
from training.tracking import PromotionDecision, decide_promotion

EXPERIMENT = "clm-tracking-tests"


# Stand-in for models/pyfunc_code/scoring_model.py, logged as code the same way: reads a bundle directory,
# predicts x × factor. (No type hints on `predict`: they would make MLflow validate inputs against them.)
SCALED_MODEL_CODE = """
import json
from pathlib import Path

import mlflow.pyfunc
from mlflow.models import set_model


class ScaledModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        bundle = Path(context.artifacts["bundle"])
        self.factor = float((bundle / "model.txt").read_text())
        self.meta = json.loads((bundle / "meta.json").read_text())

    def predict(self, context, model_input, params=None):
        return model_input["x"].to_numpy() * self.factor


set_model(ScaledModel())
"""


def _write_bundle(path: Path, factor: float) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.txt").write_text(str(factor))
    (path / "meta.json").write_text(json.dumps({"factor": factor}))
    return path


def _unset_env(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # setenv first so that teardown restores the original state even when MLflow sets the variable.
    monkeypatch.setenv(name, "")
    monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project root with one SQLite store for the module: a new store runs migrations for seconds."""
    root = tmp_path_factory.mktemp("clm_project")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _unset_env(monkeypatch, tracking.TRACKING_URI_ENV)
        uri = tracking.resolve_tracking_uri(root)
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    return root


@pytest.fixture
def store(store_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """MLflow pointed at the shared store for one test; global MLflow state restored afterwards."""
    _unset_env(monkeypatch, tracking.TRACKING_URI_ENV)
    _unset_env(monkeypatch, "MLFLOW_REGISTRY_URI")
    previous_tracking_uri = getattr(tracking_uri_state, "_tracking_uri", None)
    previous_registry_uri = getattr(registry_uri_state, "_registry_uri", None)
    uri = tracking.resolve_tracking_uri(store_root)
    tracking.configure(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous_tracking_uri)
    mlflow.set_registry_uri(previous_registry_uri)


def _register(
    registered_model_name: str, bundle_dir: Path, *, factor: float, metrics: dict, alias: str = "challenger"
) -> tracking.RegisteredVersion:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    bundle = _write_bundle(bundle_dir, factor)
    code = bundle_dir.parent / "scaled_model.py"
    code.write_text(SCALED_MODEL_CODE)
    with tracking.start_training_run(EXPERIMENT, f"train-{factor}", params={"factor": factor}, tags={}):
        tracking.log_metrics_flat(metrics)
        return tracking.log_and_register_model(
            name="model",
            python_model=code,
            model_description=f"x times a factor (registered by {registered_model_name})",
            version_description=f"factor {factor}",
            artifacts={"bundle": str(bundle)},
            signature=infer_signature(frame, frame["x"].to_numpy() * factor),
            input_example=frame.head(2),
            registered_model_name=registered_model_name,
            alias=alias,
            tags={"clm.bundle.factor": str(factor)},
        )


# --------------------------------------------------------------------------------------------------
# Where the store lives


def test_resolve_tracking_uri_honours_mlflow_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")

    assert tracking.resolve_tracking_uri(tmp_path) == "http://tracking.example:5000"
    assert not (tmp_path / "mlruns").exists()
    assert tracking.artifact_root_for("http://tracking.example:5000") is None


def test_resolve_tracking_uri_defaults_to_sqlite_under_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _unset_env(monkeypatch, "MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)

    uri = tracking.resolve_tracking_uri(Path("."))

    assert uri == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert (tmp_path / "mlruns").is_dir()
    assert tracking.artifact_root_for(uri) == (tmp_path.resolve() / "mlruns" / "artifacts").as_uri()


# --------------------------------------------------------------------------------------------------
# Pure helpers


def test_flatten_params_dots_nested_keys_jsons_lists_and_sanitises_names():
    flat = tracking.flatten_params(
        {
            "lgbm": {"num_leaves": 31, "learning_rate": 0.05},
            "windows_days": [7, 30],
            "rate@10": 1,
            "empty": {},
        }
    )

    assert flat == {
        "lgbm.num_leaves": "31",
        "lgbm.learning_rate": "0.05",
        "windows_days": "[7, 30]",
        "rate_10": "1",
        "empty": "{}",
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("backtest.roc_auc.mean", "backtest.roc_auc.mean"),
        ("auc@k=10", "auc_k_10"),
        ("/leading//double/", "leading/double"),
        ("a/../b", "a/__/b"),
        ("ratio (7d/30d)", "ratio _7d/30d_"),
    ],
)
def test_sanitize_name_gives_names_mlflow_accepts(name: str, expected: str):
    assert tracking.sanitize_name(name) == expected


def test_flatten_metrics_separates_values_that_cannot_be_logged():
    loggable, not_logged = tracking.flatten_metrics(
        {
            "roc_auc": {"mean": np.float64(0.8), "std": float("nan")},
            "lift": None,
            "ratio": float("inf"),
            "n": 3,
        },
        prefix="backtest",
    )

    assert loggable == {"backtest.roc_auc.mean": 0.8, "backtest.n": 3.0}
    assert not_logged == {"backtest.roc_auc.std": "nan", "backtest.lift": "none", "backtest.ratio": "inf"}


def test_flatten_metrics_refuses_non_numbers_and_colliding_names():
    with pytest.raises(TypeError, match="roc_auc"):
        tracking.flatten_metrics({"roc_auc": "0.8"})
    with pytest.raises(ValueError, match="same MLflow key"):
        tracking.flatten_metrics({"a@b": 1.0, "a_b": 2.0})


# --------------------------------------------------------------------------------------------------
# Runs


def test_run_logs_flattened_params_metrics_and_artifacts(
    store: str, store_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    params = {
        "lgbm": {"num_leaves": 31, "learning_rate": 0.05},
        "features": {"windows_days": [7, 30, 90]},
        "notes": "x" * 7000,
    }
    figure = Figure()
    figure.add_subplot().plot([0, 1], [0, 1])

    with tracking.start_training_run(
        EXPERIMENT, "run-1", params=params, tags={"clm.config.digest": "abc123"}
    ) as run:
        logged = tracking.log_metrics_flat(
            {"roc_auc": {"mean": 0.81, "fold": {"1": 0.79}}}, prefix="backtest"
        )
        tracking.log_figure_png(figure, "plots/roc.png")
        tracking.log_text("churn model summary", "reports/summary.txt")
        tracking.log_dict({"auc": np.float64(0.81), "cutoffs": ["2025-01-01"]}, "reports/metrics.json")
        tracking.log_frame(pd.DataFrame({"cutoff": ["2025-01-01"], "auc": [0.81]}), "tables/folds.csv")
    run_id = run.info.run_id

    finished = MlflowClient().get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.params["lgbm.num_leaves"] == "31"
    assert finished.data.params["features.windows_days"] == "[7, 30, 90]"
    assert len(finished.data.params["notes"]) == tracking.MAX_PARAM_VALUE_LENGTH
    assert json.loads(finished.data.tags[tracking.TRUNCATED_PARAMS_TAG]) == ["notes"]
    assert finished.data.tags["clm.config.digest"] == "abc123"
    assert logged == {"backtest.roc_auc.mean": 0.81, "backtest.roc_auc.fold.1": 0.79}
    assert finished.data.metrics == logged

    # Artifacts sit under <project_root>/mlruns/artifacts, at an absolute location stored in the
    # database, so a client started in another directory (like `mlflow ui`) finds them.
    run_artifacts = store_root / "mlruns" / "artifacts" / EXPERIMENT / run_id / "artifacts"
    assert (run_artifacts / "plots" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.chdir(tmp_path)
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/reports/summary.txt") == "churn model summary"
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/reports/metrics.json")["auc"] == 0.81
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/tables/folds.csv") == "cutoff,auc\n2025-01-01,0.81\n"
    assert json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{tracking.FULL_PARAMS_ARTIFACT}"))[
        "notes"
    ] == ("x" * 7000)


def test_metrics_without_a_finite_value_are_not_logged_but_named_in_a_tag(store: str):
    with tracking.start_training_run(EXPERIMENT, "nan-metrics", params={}, tags={}) as run:
        tracking.log_metrics_flat({"roc_auc": 0.8, "brier": float("nan")}, prefix="backtest")
        tracking.log_metrics_flat({"lift": {"top_decile": None}})

    data = MlflowClient().get_run(run.info.run_id).data
    assert data.metrics == {"backtest.roc_auc": 0.8}
    assert json.loads(data.tags[tracking.NOT_LOGGED_METRICS_TAG]) == {
        "backtest.brier": "nan",
        "lift.top_decile": "none",
    }


def test_failed_training_marks_the_run_failed_and_logging_needs_a_run(store: str):
    with (
        pytest.raises(RuntimeError, match="boom"),
        tracking.start_training_run(EXPERIMENT, "failing", params={}, tags={}) as run,
    ):
        raise RuntimeError("boom")

    assert MlflowClient().get_run(run.info.run_id).info.status == "FAILED"
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        tracking.log_text("orphan", "orphan.txt")


# --------------------------------------------------------------------------------------------------
# Registry


def test_log_and_register_creates_versions_and_moves_the_challenger_alias(store: str, tmp_path: Path):
    name = "clm-test-register"

    first = _register(
        name, tmp_path / "bundle-1", factor=2.0, metrics={"backtest": {"roc_auc": {"mean": 0.7}}}
    )
    assert first == tracking.RegisteredVersion(name, "1", first.run_id, f"models:/{name}/1", "challenger")
    assert tracking.version_by_alias(name, "challenger") == first

    second = _register(
        name, tmp_path / "bundle-2", factor=3.0, metrics={"backtest": {"roc_auc": {"mean": 0.75}}}
    )
    assert second.version == "2"
    assert tracking.version_by_alias(name, "challenger") == second

    model = tracking.load_model_by_alias(name, "challenger")
    np.testing.assert_allclose(model.predict(pd.DataFrame({"x": [1.0, 2.0]})), [3.0, 6.0])

    assert tracking.version_metrics(name, "1") == {"backtest.roc_auc.mean": 0.7}
    client = MlflowClient()
    assert client.get_model_version(name, "2").tags == {"clm.bundle.factor": "3.0"}
    assert client.get_model_version(name, "2").description == "factor 3.0"
    assert client.get_registered_model(name).description == f"x times a factor (registered by {name})"
    # logged as code: MLflow keeps the file, loads through its code loader and pickles nothing
    local = Path(mlflow.artifacts.download_artifacts(second.model_uri, dst_path=str(tmp_path / "download")))
    pyfunc_flavor = mlflow.models.Model.load(local).flavors["python_function"]
    assert pyfunc_flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert (local / "scaled_model.py").is_file() and not (local / "python_model.pkl").exists()
    requirements = Path(mlflow.pyfunc.get_model_dependencies(first.model_uri)).read_text().split()
    assert f"numpy=={importlib.metadata.version('numpy')}" in requirements
    assert f"lightgbm=={importlib.metadata.version('lightgbm')}" in requirements


def test_version_by_alias_is_none_for_a_missing_model_or_alias(store: str, tmp_path: Path):
    assert tracking.version_by_alias("clm-test-no-such-model", "champion") is None

    _register("clm-test-aliases", tmp_path / "bundle", factor=1.0, metrics={})
    assert tracking.version_by_alias("clm-test-aliases", "champion") is None
    assert tracking.version_by_alias("clm-test-aliases", "challenger") is not None


def test_promote_moves_champion_and_tags_every_decision(store: str, tmp_path: Path):
    name = "clm-test-promote"
    metric = {"backtest": {"roc_auc": {"mean": 0.80}}}
    first = _register(name, tmp_path / "b1", factor=1.0, metrics=metric)
    tracking.promote(
        name, decide_promotion({"backtest.roc_auc.mean": 0.80}, None, behaviour_passed=True), "1"
    )
    assert tracking.version_by_alias(name, "champion").version == first.version
    tags = MlflowClient().get_model_version(name, "1").tags
    assert tags[tracking.PROMOTION_DECISION_TAG] == "promoted"
    assert tags[tracking.PROMOTION_COMPARED_WITH_TAG] == "none"
    assert "no champion yet" in tags[tracking.PROMOTION_REASONS_TAG]
    assert tags[tracking.PROMOTION_TIMESTAMP_TAG].endswith("+00:00")

    worse = _register(name, tmp_path / "b2", factor=2.0, metrics={"backtest": {"roc_auc": {"mean": 0.70}}})
    refused = decide_promotion(
        tracking.version_metrics(name, worse.version),
        tracking.version_metrics(name, first.version),
        behaviour_passed=True,
    )
    tracking.promote(name, refused, worse.version)
    assert tracking.version_by_alias(name, "champion").version == "1"
    tags = MlflowClient().get_model_version(name, worse.version).tags
    assert tags[tracking.PROMOTION_DECISION_TAG] == "rejected"
    assert tags[tracking.PROMOTION_COMPARED_WITH_TAG] == "version 1"
    assert "0.7 fails the bar" in tags[tracking.PROMOTION_REASONS_TAG]

    better = _register(name, tmp_path / "b3", factor=3.0, metrics={"backtest": {"roc_auc": {"mean": 0.85}}})
    accepted = decide_promotion(
        tracking.version_metrics(name, better.version),
        tracking.version_metrics(name, "1"),
        behaviour_passed=True,
    )
    tracking.promote(name, accepted, better.version)
    assert tracking.version_by_alias(name, "champion").version == "3"
    assert tracking.load_model_by_alias(name).predict(pd.DataFrame({"x": [1.0]}))[0] == 3.0


# --------------------------------------------------------------------------------------------------
# Promotion rule (pure)

AUC = "backtest.roc_auc.mean"


@pytest.mark.parametrize(
    ("challenger", "champion", "behaviour_passed", "promote"),
    [
        pytest.param(0.70, None, True, True, id="no champion promotes"),
        pytest.param(0.82, 0.80, True, True, id="better promotes"),
        pytest.param(0.796, 0.80, True, True, id="within tolerance promotes"),
        pytest.param(0.79, 0.80, True, False, id="worse beyond tolerance keeps champion"),
        pytest.param(0.90, 0.80, False, False, id="failed behaviour keeps champion despite better metric"),
        pytest.param(0.90, None, False, False, id="failed behaviour without champion does not promote"),
    ],
)
def test_decide_promotion_higher_is_better(
    challenger: float, champion: float | None, behaviour_passed: bool, promote: bool
):
    decision = decide_promotion(
        {AUC: challenger},
        None if champion is None else {AUC: champion},
        behaviour_passed=behaviour_passed,
        behaviour_report="direction test: more inactive days lowered churn risk",
    )

    assert decision.promote is promote
    assert decision.challenger_value == challenger
    assert any(str(challenger) in reason for reason in decision.reasons)
    if not behaviour_passed:
        assert "behaviour tests failed: direction test" in decision.reasons[0]


@pytest.mark.parametrize(
    ("challenger", "champion", "promote"),
    [(0.10, 0.12, True), (0.124, 0.12, True), (0.13, 0.12, False)],
)
def test_decide_promotion_lower_is_better(challenger: float, champion: float, promote: bool):
    decision = decide_promotion(
        {"backtest.brier.mean": challenger},
        {"backtest.brier.mean": champion},
        metric="backtest.brier.mean",
        higher_is_better=False,
        behaviour_passed=True,
    )

    assert decision.promote is promote
    assert "≤ champion 0.12 + tolerance 0.005 = 0.125" in decision.reasons[-1]


def test_decide_promotion_keeps_champion_when_a_metric_is_missing():
    assert not decide_promotion({}, None, behaviour_passed=True).promote
    kept = decide_promotion({AUC: 0.9}, {"other": 1.0}, behaviour_passed=True)
    assert kept == PromotionDecision(False, kept.reasons, AUC, 0.9, None)
    assert "champion has no finite" in kept.reasons[-1]


@pytest.mark.parametrize(
    ("challenger", "champion", "promote"),
    [
        pytest.param(-1.0, None, False, id="a loss is not the first champion"),
        pytest.param(-1.0, -500.0, False, id="a loss is not promoted even when better than the champion"),
        pytest.param(0.0, None, True, id="break-even reaches the minimum"),
        pytest.param(120.0, 100.0, True, id="a gain within the champion's bar promotes"),
    ],
)
def test_decide_promotion_never_promotes_below_the_minimum(
    challenger: float, champion: float | None, promote: bool
):
    dr = "test.offline.dr"
    decision = decide_promotion(
        {dr: challenger}, None if champion is None else {dr: champion}, metric=dr, tolerance=50.0,
        behaviour_passed=True, minimum=0.0,
    )  # fmt: skip

    assert decision.promote is promote
    assert any("below the minimum 0" in reason for reason in decision.reasons) is (challenger < 0)


def test_promote_model_keeps_a_losing_policy_out_of_champion_with_no_champion_yet(store: str, tmp_path: Path):
    from training.promote import promote_model

    name = "clm-test-losing-policy"
    version = _register(name, tmp_path / "p1", factor=1.0, metrics={"test": {"offline": {"dr": -35.0}}})

    decision = promote_model(name, metric="test.offline.dr", tolerance=50.0, minimum=0.0)

    assert not decision.promote
    assert tracking.version_by_alias(name, "champion") is None
    tags = MlflowClient().get_model_version(name, version.version).tags
    assert tags[tracking.PROMOTION_DECISION_TAG] == "rejected"
    assert "-35 is below the minimum 0" in tags[tracking.PROMOTION_REASONS_TAG]


def test_a_run_deletes_the_empty_default_experiment_and_keeps_one_with_runs(
    migrated_store: Path, tmp_path: Path
) -> None:
    uri = new_store(migrated_store, tmp_path / "fresh")
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment_by_name("Default").lifecycle_stage == "active"  # MLflow makes it
    with mlflow_store(uri), tracking.start_training_run(EXPERIMENT, "first", params={}, tags={}):
        pass
    assert client.get_experiment_by_name("Default").lifecycle_stage == "deleted"
    assert [e.name for e in client.search_experiments()] == [EXPERIMENT]

    used = MlflowClient(tracking_uri=new_store(migrated_store, tmp_path / "used"))
    used.create_run(used.get_experiment_by_name("Default").experiment_id)
    assert tracking.delete_empty_default_experiment(used) is False
    assert used.get_experiment_by_name("Default").lifecycle_stage == "active"
