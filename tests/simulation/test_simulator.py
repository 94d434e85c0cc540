"""The simulator: determinism, realistic shape, and that its ground truth is true."""

from __future__ import annotations

import datetime as dt
import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from simulation.calibration import TARGETS, measure
from simulation.engine import default_truth_cutoffs
from simulation.io import simulate_to_directory
from simulation.params import ACTIONS, NO_ACTION
from tests.conftest import START, read


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        simulate_to_directory(tmp_path / name, n_users=600, days=120, seed=seed, start=START)
    files = _files(tmp_path / "a")
    assert files == _files(tmp_path / "b")
    assert len(files) == 10  # 4 inputs; truth: outcomes, effects, margin, stages, traits, manifest
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert mismatch == [] and errors == []
    assert not filecmp.cmp(
        tmp_path / "a" / "events.parquet", tmp_path / "c" / "events.parquet", shallow=False
    )


def test_default_world_lands_in_every_calibration_range(small_world: Path) -> None:
    calibration = measure(
        read(small_world / "truth", "outcomes"),
        read(small_world / "truth", "effects"),
        read(small_world, "campaigns"),
    )
    assert calibration.rows > 10_000
    assert calibration.out_of_range() == {}, calibration.as_dict()
    assert set(TARGETS) <= set(calibration.as_dict())


def test_events_have_a_realistic_shape(small_world: Path) -> None:
    events = read(small_world, "events")
    users = read(small_world, "users")
    per_user = events.groupby("user_id").size()
    assert set(per_user.index) == set(users["user_id"])  # everyone who signed up did something
    assert 15 <= per_user.mean() <= 120
    assert per_user.median() < per_user.mean()  # long tail of heavy users
    counts = events["event_type"].value_counts()
    assert counts["login"] > counts["purchase"] > counts["cancel"] > 0
    assert {"feature_use", "support_ticket", "upgrade", "downgrade"} <= set(counts.index)
    purchases = events[events["event_type"] == "purchase"]
    assert purchases["amount"].notna().all() and (purchases["amount"] > 0).all()
    assert events.loc[events["event_type"] != "purchase", "amount"].isna().all()
    assert str(events["ts"].dt.tz) == "UTC"
    assert events["ts"].is_monotonic_increasing
    first_event = events.groupby("user_id")["ts"].min()
    signup = users.set_index("user_id")["signup_ts"]
    assert (first_event.loc[signup.index] >= signup).all()


def test_subscriptions_are_consistent_with_plan_events(small_world: Path) -> None:
    subs = read(small_world, "subscriptions")
    events = read(small_world, "events")
    assert (subs["end"].isna() | (subs["end"] >= subs["start"])).all()
    assert set(subs["plan"]) <= {"basic", "pro"}
    assert set(subs["mrr"]) <= {12.0, 39.0}
    cancels = events[events["event_type"] == "cancel"]
    ended = subs.dropna(subset=["end"]).set_index(["user_id", "end"])
    assert ended.index.isin(list(zip(cancels["user_id"], cancels["ts"], strict=True))).sum() == len(cancels)


def test_latent_stage_intervals_tile_time_and_match_the_truth(small_world: Path) -> None:
    stages = read(small_world / "truth", "stages").sort_values(["user_id", "start"])
    same_user = stages["user_id"].eq(stages["user_id"].shift(-1))
    following_start = stages["start"].shift(-1)
    assert (stages.loc[same_user, "end"] == following_start[same_user]).all()
    assert stages.loc[~same_user, "end"].isna().all()
    outcomes = read(small_world / "truth", "outcomes")
    sample = outcomes.sample(500, random_state=0)
    merged = sample.merge(stages, on="user_id", suffixes=("", "_interval"))
    cutoff = pd.to_datetime(merged["cutoff"])
    covering = (pd.to_datetime(merged["start"]) < cutoff) & (
        merged["end"].isna() | (pd.to_datetime(merged["end"]) >= cutoff)
    )
    # the stage at a cutoff is the one entered before it (transitions on the cutoff day happen after the snapshot)
    last = merged[covering].sort_values("start").groupby(["user_id", "cutoff"]).tail(1)
    assert len(last) == len(sample)
    assert (last["latent_stage"] == last["latent_stage_interval"]).all()


def test_higher_true_probability_means_more_realised_churn_and_it_is_calibrated(small_world: Path) -> None:
    outcomes = read(small_world / "truth", "outcomes").dropna(subset=["churned"])
    outcomes = outcomes[outcomes["latent_stage"] != "churned"]
    untreated = outcomes[outcomes["campaign_action"].isin([NO_ACTION]) | outcomes["campaign_action"].isna()]
    bins = pd.qcut(untreated["p_churn"], 10, labels=False, duplicates="drop")
    table = untreated.groupby(bins).agg(
        p=("p_churn", "mean"), rate=("churned", "mean"), n=("churned", "size")
    )
    assert table["rate"].iloc[-1] > 5 * table["rate"].iloc[0]
    standard_error = np.sqrt(table["p"] * (1 - table["p"]) / table["n"])
    assert (abs(table["rate"] - table["p"]) < 4 * standard_error + 0.01).all(), table
    auc = roc_auc_score(untreated["churned"].astype(bool), untreated["p_churn"])
    assert 0.8 <= auc <= 0.92


def test_treatment_effects_show_up_in_the_campaign_data(small_world: Path) -> None:
    outcomes = read(small_world / "truth", "outcomes").dropna(subset=["churned"])
    effects = read(small_world / "truth", "effects")
    rows = outcomes.merge(
        effects, left_on=["user_id", "cutoff", "campaign_action"], right_on=["user_id", "cutoff", "action"]
    )
    assert set(rows["action"]) <= set(ACTIONS) and len(rows) > 500
    helped = rows[rows["delta_p_churn"] < -0.03]
    harmed = rows[rows["delta_p_churn"] > 0.01]
    # Realised churn of treated users sits below (above) their no-action probability by about the true effect.
    for group, sign in ((helped, -1), (harmed, 1)):
        residual = group["churned"].astype(float) - group["p_churn"]
        se = residual.std() / np.sqrt(len(residual))
        assert sign * residual.mean() > 2 * se, (sign, residual.mean(), se, len(group))
        assert abs(residual.mean() - group["delta_p_churn"].mean()) < 4 * se
    controls = outcomes[outcomes["campaign_action"] == NO_ACTION]
    residual = controls["churned"].astype(float) - controls["p_churn"]
    assert abs(residual.mean()) < 4 * residual.std() / np.sqrt(len(residual))


def test_campaigns_log_random_assignment_with_propensities(small_world: Path) -> None:
    campaigns = read(small_world, "campaigns")
    assert set(campaigns["action"]) == {*ACTIONS, NO_ACTION}
    treated = campaigns[campaigns["action"] != NO_ACTION]
    assert ((treated["propensity"] > 0) & (treated["propensity"] <= 0.2 + 1e-12)).all()
    assert np.allclose(campaigns.loc[campaigns["action"] == NO_ACTION, "propensity"], 0.8)
    assert (campaigns["ts"].dt.day == 1).all()
    assert not campaigns.duplicated(["user_id", "ts"]).any()


def test_default_truth_cutoffs_are_month_starts_after_sixty_days() -> None:
    cutoffs = default_truth_cutoffs(dt.date(2025, 1, 1), 365)
    assert cutoffs[0] == dt.date(2025, 4, 1) and cutoffs[-1] == dt.date(2025, 12, 1)
    assert all(c.day == 1 for c in cutoffs)


@pytest.mark.parametrize("bad", [dt.date(2024, 12, 1), dt.date(2026, 1, 1)])
def test_truth_cutoffs_outside_the_period_are_refused(tmp_path: Path, bad: dt.date) -> None:
    with pytest.raises(ValueError, match="outside the simulated period"):
        simulate_to_directory(tmp_path / "w", n_users=50, days=365, seed=0, start=START, truth_cutoffs=[bad])
    assert not (tmp_path / "w").exists()


def test_true_upgrade_probability_is_calibrated(small_world: Path) -> None:
    outcomes = read(small_world / "truth", "outcomes").dropna(subset=["upgraded"])
    outcomes = outcomes[(outcomes["latent_stage"] != "churned") & (outcomes["p_upgrade"] > 0)]
    expected, realised = outcomes["p_upgrade"].sum(), outcomes["upgraded"].sum()
    assert abs(realised - expected) < 4 * np.sqrt(expected) + 5, (realised, expected)
    top = outcomes["p_upgrade"] >= outcomes["p_upgrade"].quantile(0.8)
    assert outcomes.loc[top, "upgraded"].mean() > 2 * outcomes.loc[~top, "upgraded"].mean()


def test_simulated_files_meet_the_ingest_contract_and_reingest_cleanly(
    small_world: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    from features.ingest import ingest_files
    from features.schemas import validate_canonical

    for kind in ("events", "users", "subscriptions", "campaigns"):
        validate_canonical(kind, pq.read_table(small_world / f"{kind}.parquet"))
    counts = ingest_files(
        tmp_path / "data",
        events=small_world / "events.parquet",
        users=small_world / "users.parquet",
        subscriptions=small_world / "subscriptions.parquet",
        campaigns=small_world / "campaigns.parquet",
    ).counts
    for kind, c in counts.items():
        assert (c.rejected, c.duplicates) == (0, 0), kind
        assert c.accepted == c.read == len(read(small_world, kind))
