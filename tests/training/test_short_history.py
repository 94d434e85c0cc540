"""Training on the history people actually have: cutoffs that fit a short log, backtests that degrade to
what the data allows (and name the minimum history when nothing fits), transaction-only exports, and
`clm train` / `clm score` with nothing but events."""

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
from features.build import SINGLE_PASS_MAX_CUTOFFS
from features.datadir import resolve_data_dir
from features.jobs import build_feature_tables
from tests.training.short_logs import purchase_log, saas_log, write_csv
from training.dataset import NotEnoughHistory, plan_cutoffs

runner = CliRunner()
D = dt.date
START = D(2025, 1, 1)
# One LightGBM thread: these training sets have a few thousand rows, and on a busy 2-core machine the
# default threads spend more time waiting for each other than working (10× slower measured).
FAST = """
[training]
shap_sample_rows = 300
[models.churn.params]
num_threads = 1
[models.upgrade.params]
num_threads = 1
"""


@pytest.fixture(autouse=True)
def fast_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path_factory.getbasetemp() / "short-history.toml"
    path.write_text(FAST)
    monkeypatch.setenv("CLM_CONFIG", str(path))


# ---------------------------------------------------------------------------------------------------
# the cutoff plan (dates only)


def test_a_seven_month_log_with_a_31_day_horizon_gets_weekly_cutoffs_and_three_folds() -> None:
    plan = plan_cutoffs(START, D(2025, 8, 1), horizon_days=31, lead_days=90)
    assert plan.cadence == "weekly" and plan.cutoffs[0] == D(2025, 4, 1)
    assert len(plan.splits) == 3 and not any(s.holdout for s in plan.splits)
    for split in plan.splits:
        assert max(split.train) + dt.timedelta(days=31) <= split.valid
        assert split.valid + dt.timedelta(days=31) <= split.test <= D(2025, 8, 1) - dt.timedelta(days=31)


def test_a_long_history_keeps_monthly_cutoffs() -> None:
    plan = plan_cutoffs(START, D(2026, 1, 1), horizon_days=30, lead_days=90)
    assert plan.cadence == "monthly" and len(plan.splits) == 3
    assert plan.cutoffs == [D(2025, m, 1) for m in range(4, 13)]


def test_a_nine_month_log_with_a_90_day_horizon_degrades_to_one_time_based_holdout() -> None:
    plan = plan_cutoffs(START, D(2025, 10, 2), horizon_days=90, lead_days=90)
    (split,) = plan.splits
    assert split.holdout and plan.cadence == "daily"
    # only the test cutoff is separated: every training and validation window closes by it
    assert split.valid + dt.timedelta(days=90) <= split.test
    assert split.test + dt.timedelta(days=90) <= D(2025, 10, 2)
    assert "single time-based holdout" in plan.describe()


def test_a_configured_cadence_is_kept() -> None:
    plan = plan_cutoffs(START, D(2025, 8, 1), horizon_days=31, lead_days=90, cadence="monthly")
    assert plan.cadence == "monthly" and all(c.day == 1 for c in plan.cutoffs)
    plan = plan_cutoffs(START, D(2025, 8, 1), horizon_days=31, lead_days=90, cadence=10)
    assert {(b - a).days for a, b in zip(plan.cutoffs, plan.cutoffs[1:], strict=False)} <= {10, 20, 30, 40}


def test_too_short_a_history_names_the_minimum_for_the_horizon_and_cadence() -> None:
    with pytest.raises(NotEnoughHistory) as caught:
        plan_cutoffs(START, D(2025, 3, 2), horizon_days=90, lead_days=90)
    message = str(caught.value)
    # 90 days of features, a training and a validation cutoff a day apart, 90 days to the test cutoff and
    # 90 more for its labels
    assert "at least 271 days of history at daily cutoffs" in message
    assert "90-day horizon" in message and "the data has 60 days" in message


def test_an_explicit_number_of_folds_is_met_or_refused() -> None:
    plan = plan_cutoffs(START, D(2026, 1, 1), horizon_days=30, lead_days=90, folds=5, exact_folds=True)
    assert len(plan.splits) == 5
    with pytest.raises(NotEnoughHistory, match="a 5-fold backtest needs at least"):
        plan_cutoffs(
            START, D(2025, 8, 1), horizon_days=31, lead_days=90, folds=5, exact_folds=True, cadence="monthly"
        )


# ---------------------------------------------------------------------------------------------------
# data: weekly cutoffs, transaction-only exports


@pytest.fixture(scope="module")
def retail_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nine months of purchases only (no logins, subscriptions, users or campaigns), as a CSV export."""
    root = tmp_path_factory.mktemp("retail")
    return write_csv(purchase_log(400, 274, seed=3), root / "purchases.csv")


@pytest.fixture(scope="module")
def retail_data(retail_export: Path) -> Path:
    out = retail_export.parent / "data"
    result = runner.invoke(app, ["ingest", "--events", str(retail_export), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_features_at_a_weekly_cutoff_equal_the_same_cutoff_computed_alone(
    retail_data: Path, tmp_path: Path
) -> None:
    # more cutoffs than the single-pass plan takes: the running totals against one cutoff's single pass
    weekly = [D(2025, 4, 1) + dt.timedelta(days=7 * k) for k in range(16)]
    assert len(weekly) > SINGLE_PASS_MAX_CUTOFFS
    many = build_feature_tables(retail_data, weekly, tmp_path / "many")
    alone = build_feature_tables(retail_data, [weekly[6]], tmp_path / "alone")
    at = pd.read_parquet(many.features_path)
    at = at[pd.to_datetime(at["cutoff"]).dt.date == weekly[6]].reset_index(drop=True)
    single = pd.read_parquet(alone.features_path)
    assert len(single) > 100
    pd.testing.assert_frame_equal(at, single, check_dtype=False)
    # the purchase-cycle features are there and computed
    assert single["purchase_gap_mean_days"].notna().sum() > 50
    assert single["days_since_last_login"].isna().all()


def test_users_without_signup_ts_load_and_start_at_their_first_event(tmp_path: Path) -> None:
    log = saas_log(40, 120, seed=5)
    files = {name: write_csv(frame, tmp_path / f"{name}.csv") for name, frame in log.items()}
    # one account only ever subscribed (no event): it starts at its subscription
    extra = pd.DataFrame({"user_id": ["quiet"], "plan": ["basic"]})
    pd.concat([log["users"], extra]).to_csv(files["users"], index=False)
    subs = pd.read_csv(files["subscriptions"])
    quiet = {"user_id": "quiet", "plan": "basic", "start": "2025-02-03T00:00:00Z", "end": None, "mrr": 29.0}
    pd.concat([subs, pd.DataFrame([quiet])]).to_csv(files["subscriptions"], index=False)
    out = tmp_path / "data"
    result = runner.invoke(app, ["ingest", "--events", str(files["events"]), "--users", str(files["users"]),
                                 "--subscriptions", str(files["subscriptions"]), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "41 users have no signup_ts" in result.output
        and "1 at their first subscription start" in result.output
    )
    current = resolve_data_dir(out)
    users = pd.read_parquet(current / "users.parquet").set_index("user_id")
    events = pd.read_parquet(current / "events.parquet")
    first_event = events.groupby("user_id")["ts"].min()
    first_subscription = pd.read_parquet(current / "subscriptions.parquet").groupby("user_id")["start"].min()
    expected = pd.concat([first_event, first_subscription], axis=1).min(axis=1)
    pd.testing.assert_series_equal(users["signup_ts"].sort_index(), expected.sort_index(), check_names=False)
    assert users.loc["quiet", "signup_ts"] == pd.Timestamp("2025-02-03", tz="UTC")


# ---------------------------------------------------------------------------------------------------
# end to end with the CLI


def _train(data: Path, *args: str) -> list[dict]:
    result = runner.invoke(app, ["train", "--data", str(data), *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _score(data: Path, as_of: str, out: Path) -> tuple[pd.DataFrame, str]:
    result = runner.invoke(app, ["promote", "--model", "churn"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["score", "--data", str(data), "--as-of", as_of, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return (pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)), result.output


def test_a_purchases_only_log_trains_and_scores_end_to_end(
    retail_data: Path, store: str, tmp_path: Path
) -> None:
    summary = _train(retail_data, "--horizon-days", "90")
    by_target = {entry["target"]: entry for entry in summary}
    churn = by_target["churn"]
    assert churn["evaluation"] == "single time-based holdout" and churn["backtest_folds"] == 1
    assert churn["backtest"]["roc_auc"]["n"] == 1 and set(churn["backtest_baselines"]) == {
        "logistic",
        "recency_rule",
        "bgnbd",  # the buy-till-you-die baseline, on the same test rows
    }
    notes = " ".join(by_target["notes"]["notes"])
    assert "daily cutoffs" in notes and "no users input: every user begins at their first event" in notes
    assert "policy: not trained" in notes and "prior effects" in notes
    run = MlflowClient(tracking_uri=store).get_run(churn["run_id"])
    assert (
        run.data.metrics["backtest_folds"] == 1.0
        and run.data.tags["clm.evaluation"] == "single time-based holdout"
    )
    behaviour = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/behaviour.txt")
    assert "SKIP direction:days_since_last_login: the data never has days_since_last_login" in behaviour
    assert "PASS direction:days_since_last_event" in behaviour
    card = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model_card.md")
    assert "Evaluation: single time-based holdout" in card

    scores, output = _score(retail_data, "2025-10-02", tmp_path / "scores.csv")
    assert len(scores) == 400 and scores["p_churn"].between(0, 1).all()
    assert scores["stage"].notna().all() and scores["clv"].notna().all()
    assert set(scores["effect_source"].dropna()) <= {"prior"}
    assert "catalogue's prior effects" in output


def test_a_seven_month_saas_log_with_a_31_day_horizon_reports_its_folds_and_scores(
    store: str, tmp_path: Path
) -> None:
    log = saas_log(300, 212, seed=8)
    files = {name: write_csv(frame, tmp_path / f"{name}.csv") for name, frame in log.items()}
    data = tmp_path / "data"
    result = runner.invoke(app, ["ingest", "--events", str(files["events"]), "--users", str(files["users"]),
                                 "--subscriptions", str(files["subscriptions"]), "--out", str(data)])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--data", str(data), "--horizon-days", "31"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "weekly cutoffs" in text and "evaluation: 3-fold backtest; mean ROC AUC over 3 folds" in text
    assert "upgrade: not trained" in text  # no upgrade event, no purchase: its labels have one class
    scores, output = _score(data, "2025-08-01", tmp_path / "scores.parquet")
    assert len(scores) == 300 and scores["p_upgrade"].isna().all() and scores["p_churn"].notna().all()
    assert "no upgrade model registered" in output


def test_a_two_month_log_with_a_90_day_horizon_is_refused_naming_the_minimum(
    tmp_path: Path, store: str
) -> None:
    events = write_csv(purchase_log(100, 60, seed=4), tmp_path / "purchases.csv")
    data = tmp_path / "data"
    assert runner.invoke(app, ["ingest", "--events", str(events), "--out", str(data)]).exit_code == 0
    result = runner.invoke(app, ["train", "--data", str(data), "--horizon-days", "90"])
    assert result.exit_code == 2
    assert "needs at least 271 days of history at daily cutoffs" in " ".join(result.output.split())
    assert "Traceback" not in result.output
