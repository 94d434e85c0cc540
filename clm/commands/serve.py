"""`clm serve`: the decision API under uvicorn (uvloop + httptools), N worker processes."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated

import typer

from clm.config import load_config


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
    from clm.settings import Settings
    from training import tracking

    settings = Settings()
    load_config(settings.config)  # fail here, not in every worker, on a bad config file
    check_serving_settings()
    if settings.config is not None:
        os.environ["CLM_CONFIG"] = str(Path(settings.config).resolve())
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking.resolve_tracking_uri(Path.cwd()))
    os.environ.setdefault("CLM_DATA_DIR", str(Path(settings.data_dir).resolve()))
    prepare_run_dir(workers)
    share_session_secret()
    # uvicorn's own command line becomes this process: worker processes are spawned, and a spawned worker
    # re-imports the parent's main module — `clm` would import every command (15–18 s) and miss uvicorn's
    # 5 s health check, so the supervisor would kill and restart workers for ever.
    # (serving.server: uvicorn with a header-read timeout, running `app_factory` below)
    argv = [
        sys.executable, "-m", "serving.server", "--host", host, "--port", str(port), "--workers", str(workers),
        "--log-level", log_level,
    ]  # fmt: skip
    os.execv(sys.executable, argv)


def check_serving_settings() -> None:
    """The server's settings (CLM_API_KEYS, limits) are valid, or exit 2 naming what is wrong — before
    any worker starts, so a bad key is one clear line, not a crash loop."""
    from pydantic import ValidationError

    from serving.settings import ServingSettings

    try:
        ServingSettings()
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            typer.echo(f"clm serve: {where + ': ' if where else ''}{error['msg']}", err=True)
        raise typer.Exit(2) from exc


def prepare_run_dir(workers: int) -> Path:
    """The directory the workers share (CLM_RUN_DIR: reload generation, each worker's versions), made fresh
    unless given; with several workers also Prometheus' multiprocess directory inside it, emptied, so
    /metrics adds up every worker (it must be set before any worker imports prometheus_client)."""
    given = os.environ.get("CLM_RUN_DIR")
    run_dir = Path(given) if given else Path(tempfile.mkdtemp(prefix="clm-serve-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir / "workers", ignore_errors=True)
    shutil.rmtree(run_dir / "metrics", ignore_errors=True)
    (run_dir / "reload-generation").unlink(missing_ok=True)
    os.environ["CLM_RUN_DIR"] = str(run_dir)
    if workers > 1:
        (run_dir / "metrics").mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return run_dir


def share_session_secret() -> None:
    """Without a configured CLM_SESSION_SECRET, one made now and put in the environment the workers inherit:
    every worker then accepts a reviewer session any worker issued (and all end when the server restarts)."""
    from pydantic import ValidationError

    from serving.settings import ServingSettings

    try:
        configured = ServingSettings().session_secret
    except ValidationError as exc:  # a bad setting is named here once, not as a traceback in every worker
        for error in exc.errors():
            name = "CLM_" + "_".join(str(part) for part in error["loc"]).upper()
            typer.echo(f"clm serve: {name}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    if configured is None:
        os.environ["CLM_SESSION_SECRET"] = secrets.token_urlsafe(32)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def background_server(
    env: Mapping[str, str], workdir: Path, *, workers: int = 1, ready_timeout_seconds: float = 180.0,
    ready_path: str = "/readyz",
) -> Iterator[str]:  # fmt: skip
    """`clm serve` in its own process group on a free 127.0.0.1 port with `env` added to the environment;
    yields the base URL once `ready_path` (/readyz; /healthz for a server expected not to be ready) answers
    200 (RuntimeError with the server's log if it never does) and always stops the process group. Used by
    `clm demo` and the live tests."""
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = Path(workdir) / "serve.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "clm.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            env={**os.environ, **env}, cwd=workdir, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + ready_timeout_seconds
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}{ready_path}", timeout=2).status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"clm serve did not become ready:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.5)
            yield base
        finally:
            with contextlib.suppress(ProcessLookupError):  # a test may have killed the group already
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
