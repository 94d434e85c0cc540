"""`clm serve`: the decision API under uvicorn (uvloop + httptools), N worker processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from clm.config import load_config
from clm.settings import Settings


def app_factory():
    """What each uvicorn worker builds: the config from CLM_CONFIG, MLflow from MLFLOW_TRACKING_URI (both
    set by `clm serve` before the workers start)."""
    from serving.app import create_app

    path = os.environ.get("CLM_CONFIG")
    return create_app(load_config(Path(path)) if path else load_config())


def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 1,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "warning",
) -> None:
    """Serve decisions over HTTP: the @champion models and policy from the MLflow registry, features from
    the online store (CLM_ONLINE_STORE), keys from CLM_API_KEYS, the decision log at CLM_DECISION_LOG."""
    from training import tracking

    settings = Settings()
    load_config(settings.config)  # fail here, not in every worker, on a bad config file
    if settings.config is not None:
        os.environ["CLM_CONFIG"] = str(Path(settings.config).resolve())
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking.resolve_tracking_uri(Path.cwd()))
    os.environ.setdefault("CLM_DATA_DIR", str(Path(settings.data_dir).resolve()))
    # uvicorn's own command line becomes this process: worker processes are spawned, and a spawned worker
    # re-imports the parent's main module — `clm` would import every command (15–18 s) and miss uvicorn's
    # 5 s health check, so the supervisor would kill and restart workers for ever.
    argv = [
        sys.executable, "-m", "uvicorn", "clm.commands.serve:app_factory", "--factory", "--host", host,
        "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
        "--log-level", log_level, "--no-access-log", "--timeout-worker-healthcheck", "60",
    ]  # fmt: skip
    os.execv(sys.executable, argv)
