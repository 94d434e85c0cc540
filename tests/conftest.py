"""Shared fixtures: small simulated worlds, generated once per session."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from simulation.io import simulate_to_directory

START = dt.date(2025, 1, 1)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 15,000-user, 300-day world: big enough for rates and AUCs to be measured, small enough for CI."""
    out = tmp_path_factory.mktemp("worlds") / "small"
    simulate_to_directory(out, n_users=15000, days=300, seed=42, start=START)
    return out


def read(world: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(world / f"{name}.parquet")
