"""The training job end to end on a small simulated world with a real MLflow SQLite store: runs, artifacts,
registry aliases, promotion with recorded reasons, evaluate and batch scoring."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from clm.cli import app
from clm.config import load_config
from simulation.io import simulate_to_directory
from training import tracking
from training.promote import promote_model
from training.train import train

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trainworld") / "w"
    simulate_to_directory(out, n_users=3000, days=270, seed=7, start=dt.date(2025, 1, 1))
    return out


@pytest.fixture(scope="module")
def first(world: Path, store: str, tmp_path_factory: pytest.TempPathFactory):
    config = load_config()
    return train(world, ["churn", "upgrade", "reactivation"], config=config,
                 project_root=tmp_path_factory.mktemp("proj"), truth_dir=world / "truth")  # fmt: skip


def test_each_target_gets_a_run_with_its_artifacts_and_a_challenger(first, store: str) -> None:
    client = MlflowClient(tracking_uri=store)
    assert [r.target for r in first] == ["churn", "upgrade", "reactivation"]
    assert all(r.behaviour_passed for r in first)
    for result in first:
        version = client.get_model_version_by_alias(result.registered_name, "challenger")
        assert str(version.version) == result.version == "1"
        run = client.get_run(result.run_id)
        for key in ("test.model.roc_auc", "test.logistic.roc_auc", "test.recency_rule.roc_auc", "test.oracle.roc_auc",
                    "test.model.ece", "test.model.ece_before_calibration", "backtest.roc_auc.mean",
                    "backtest.roc_auc.std", "test.model.auc_over_oracle_auc"):  # fmt: skip
            assert key in run.data.metrics, key
        # BG/NBD ("no activity within the horizon") is a churn baseline only
        bgnbd = {"test.bgnbd.roc_auc", "test.bgnbd.param_r", "backtest_baselines.bgnbd.roc_auc.mean"}
        assert (bgnbd <= set(run.data.metrics)) is (result.target == "churn")
        paths = {a.path for a in client.list_artifacts(result.run_id)}
        assert {"model_card.md", "behaviour.txt", "plots", "metrics", "config"} <= paths
        plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
        assert {
            "plots/calibration.png",
            "plots/lift.png",
            "plots/shap_beeswarm.png",
            "plots/feature_importance.png",
        } <= plots
        assert any("shap_dependence" in p for p in plots)
        card = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model_card.md")
        assert result.registered_name in card and "oracle" in card.lower()
        assert run.data.params["scoring_cutoff"] == str(result.scoring_cutoff) == "2025-09-28"


def test_the_registered_model_loads_by_alias_and_predicts_probabilities(first, world: Path) -> None:
    model = tracking.load_model_by_alias("clm-churn", "challenger")
    signature_columns = [c.name for c in model.metadata.get_input_schema().inputs]
    assert "days_since_last_event" in signature_columns and "current_plan" in signature_columns
    strings = {c.name for c in model.metadata.get_input_schema().inputs if c.type.name == "string"}
    assert {"current_plan", "last_action", "rfm_segment"} <= strings
    row = {name: (None if name in strings else float("nan")) for name in signature_columns}
    row.update(days_since_last_event=40.0, current_plan="basic")
    out = model.predict(pd.DataFrame([row]).astype({name: "object" for name in strings}))
    assert 0.0 <= float(out["probability"].iloc[0]) <= 1.0


def test_promotion_records_its_reasons_and_the_second_run_is_compared_on_the_same_backtest(
    first, world: Path, store: str, tmp_path: Path
) -> None:
    config = load_config()
    metric, tolerance = (
        config.training.promotion_metric,
        config.training.promotion_tolerance,
    )
    decision = promote_model("clm-churn", metric=metric, tolerance=tolerance)
    client = MlflowClient(tracking_uri=store)
    assert decision.promote and str(client.get_model_version_by_alias("clm-churn", "champion").version) == "1"
    assert "clm.promotion.reasons" in client.get_model_version("clm-churn", "1").tags

    second = train(world, ["churn"], config=config, project_root=tmp_path, truth_dir=world / "truth")[0]
    assert second.version == "2"
    run = client.get_run(second.run_id)
    # the champion was scored on the challenger's backtest; same seed and data ⇒ the same numbers
    assert run.data.metrics["champion_backtest.roc_auc.mean"] == pytest.approx(
        run.data.metrics["backtest.roc_auc.mean"]
    )
    result = runner.invoke(app, ["promote", "--model", "churn"])
    assert result.exit_code == 0, result.output
    assert str(client.get_model_version_by_alias("clm-churn", "champion").version) == "2"
    tags = client.get_model_version("clm-churn", "2").tags
    assert tags["clm.promotion.decision"] == "promoted"
    assert tags["clm.promotion.compared_with"] == "version 1"


def test_a_challenger_that_fails_behaviour_checks_is_not_promoted(first, store: str) -> None:
    client = MlflowClient(tracking_uri=store)
    run_id = first[1].run_id  # upgrade
    client.log_metric(run_id, "behaviour_passed", 0.0)
    decision = promote_model("clm-upgrade", metric="backtest.roc_auc.mean", tolerance=0.005)
    assert not decision.promote
    assert client.get_registered_model("clm-upgrade").aliases.get("champion") is None
    assert client.get_model_version("clm-upgrade", "1").tags["clm.promotion.decision"] == "rejected"
    client.log_metric(run_id, "behaviour_passed", 1.0)


def test_evaluate_command(first, world: Path) -> None:
    result = runner.invoke(
        app, ["evaluate", "--model-version", "1", "--model", "churn", "--data", str(world), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert 0.5 < payload["backtest"]["roc_auc"]["mean"] <= 1.0


def test_train_command_prints_a_json_summary_and_refuses_a_too_short_history(
    first, world: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["train", "--data", str(world), "--model", "upgrade", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary[0]["model"] == "clm-upgrade" and summary[0]["behaviour_passed"] is True
    assert summary[0]["test"]["model"]["roc_auc"] > summary[0]["test"]["recency_rule"]["roc_auc"]
    short = runner.invoke(app, ["train", "--data", str(world), "--as-of", "2025-05-15"])
    assert short.exit_code == 2
    # the message names the minimum history for the horizon: 90 days before the first cutoff, a training
    # and a validation cutoff a day apart, 30 days to the test cutoff and 30 for its labels
    assert "needs at least 151 days of history at daily cutoffs" in " ".join(short.output.split())


def test_train_command_refuses_an_as_of_date_before_the_first_event(world: Path) -> None:
    result = runner.invoke(app, ["train", "--data", str(world), "--as-of", "2024-06-01"])
    assert result.exit_code == 2, result.output
    message = result.output + (result.stderr or "")
    assert "2024-06-01" in message and "2025-01-01" in message and "first event" in message
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_each_model_trains_and_is_measured_on_the_population_it_scores(first, store: str) -> None:
    """Churn and upgrade on the users alive at a cutoff, reactivation on the lapsed ones: the backtest's AUC and
    calibration error are computed on those rows, and the reactivation model beats its baselines."""
    client = MlflowClient(tracking_uri=store)
    populations = {}
    for result in first:
        run = client.get_run(result.run_id)
        populations[result.target] = run.data.params["population"]
    assert populations == {"churn": "alive", "upgrade": "alive", "reactivation": "lapsed"}
    reactivation = first[2]
    assert reactivation.registered_name == "clm-reactivation"
    assert (
        reactivation.test_metrics["model"]["roc_auc"]
        > reactivation.test_metrics["recency_rule"]["roc_auc"] - 0.02
    )
    assert reactivation.test_metrics["model"]["roc_auc"] > 0.6


def test_bounded_calibration_costs_no_more_than_the_configured_tolerance(first) -> None:
    """No calibrated probability is 0 or 1, and the backtest's calibration error is no worse than plain isotonic
    regression's on the same folds by more than `training.calibration_tolerance`."""
    tolerance = load_config().training.calibration_tolerance
    for result in first:
        bounded, plain = result.backtest["ece"]["mean"], result.backtest["ece_plain_isotonic"]["mean"]
        assert bounded <= plain + tolerance, (result.target, bounded, plain)
