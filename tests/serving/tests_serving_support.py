"""Starting `clm serve` as a real process for the live tests (shared by test_live and test_schema)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from clm.commands.serve import background_server


@contextlib.contextmanager
def running_server(
    world, api_keys: dict, workdir: Path, workers: int = 1, cache_max_users: int = 100,
    extra_env: dict[str, str] | None = None, ready_path: str = "/readyz",
) -> Iterator[tuple[str, str]]:  # fmt: skip
    """`clm serve` over the served world with a decision log in `workdir` (and `extra_env`); yields the base
    URL and the log URL once `ready_path` answers 200."""
    log_url = f"sqlite:///{workdir / 'decisions.db'}"
    env = {
        "MLFLOW_TRACKING_URI": world.tracking_uri,
        "CLM_API_KEYS": json.dumps(api_keys),
        "CLM_ONLINE_STORE": world.store_url,
        "CLM_DECISION_LOG": log_url,
        "CLM_EXPLORATION": "false",
        # below the world's 3,000 users, the decision cache fills on demand instead of a bulk build per worker
        "CLM_DECISION_CACHE_MAX_USERS": str(cache_max_users),
        **(extra_env or {}),
    }
    with background_server(
        env, workdir, workers=workers, ready_timeout_seconds=120, ready_path=ready_path
    ) as base:
        yield base, log_url
