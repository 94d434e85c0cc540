"""Starting `clm serve` as a real process for the live tests (shared by test_live and test_schema)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(world, api_keys: dict, workdir: Path, workers: int = 1) -> Iterator[tuple[str, str]]:
    """`clm serve` on a free port over the served world, with a decision log in `workdir`; yields the base
    URL and the log URL once /readyz answers 200, and always stops the process group."""
    port = free_port()
    log_url = f"sqlite:///{workdir / 'decisions.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": world.tracking_uri,
        "CLM_API_KEYS": json.dumps(api_keys),
        "CLM_ONLINE_STORE": world.store_url,
        "CLM_DECISION_LOG": log_url,
        "CLM_EXPLORATION": "false",
    }
    clm = Path(sys.executable).parent / "clm"
    with (workdir / "server.log").open("wb") as output:
        process = subprocess.Popen(
            [str(clm), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            env=env, cwd=workdir, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"server did not become ready:\n{(workdir / 'server.log').read_text()}"
                    )
                time.sleep(0.5)
            yield base, log_url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
