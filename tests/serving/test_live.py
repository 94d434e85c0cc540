"""The API as users meet it: `clm serve` in its own process on 127.0.0.1, real HTTP. A reload while a client
keeps asking (zero errors, both versions in the decision log) and a failed reload that keeps the old
models serving."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from tests_serving_support import running_server

from serving.decision_log import DecisionLog
from tests.conftest import mlflow_store

SCORE = {"X-API-Key": "score-key"}
ADMIN = {"X-API-Key": "admin-key"}


@pytest.fixture
def server(private_served_world, api_keys, tmp_path: Path):
    """`clm serve` on a free port with its own decision log and its own copy of the registry (the test
    registers versions and moves @champion, here made current too); yields (base URL, log URL)."""
    with (
        mlflow_store(private_served_world.tracking_uri),
        running_server(private_served_world, api_keys, tmp_path) as started,
    ):
        yield started


def register_copy(name: str, version: str, corrupt: bool = False, workdir: Path | None = None) -> str:
    """A new version of `name` with the artifacts of `version` (optionally with a corrupted policy or
    bundle file), pointed at by @champion. Returns the new version number."""
    client = MlflowClient()
    source = client.get_model_version(name, version).source
    if not corrupt:
        created = mlflow.register_model(source, name)
    else:
        assert workdir is not None
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(workdir)))
        for path in local.rglob("*.json"):
            if path.name in ("policy.json", "bundle.json", "uplift.json"):
                path.write_text("{ not json")
        with mlflow.start_run(run_name=f"corrupt-{name}") as run:
            mlflow.log_artifacts(str(local), artifact_path="model")
        created = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
        shutil.rmtree(local, ignore_errors=True)
    client.set_registered_model_alias(name, "champion", str(created.version))
    return str(created.version)


def test_live_server_reload_under_load_and_a_failed_reload(
    server, private_served_world, tmp_path: Path
) -> None:
    served_world = private_served_world
    base, log_url = server
    user = served_world.user_ids[0]
    first = httpx.get(f"{base}/v1/users/{user}/decision", headers=SCORE, timeout=10)
    assert first.status_code == 200 and first.json()["versions"]["policy"] == "clm-policy/1"
    assert httpx.get(f"{base}/v1/users/{user}/decision", timeout=10).status_code == 401

    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not stop.is_set():
                uid = served_world.user_ids[i % len(served_world.user_ids)]
                statuses.append(client.get(f"{base}/v1/users/{uid}/decision", headers=SCORE).status_code)
                i += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(1.0)
        new_version = register_copy("clm-policy", "1")
        reloaded = httpx.post(f"{base}/v1/admin/reload", headers=ADMIN, timeout=60)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["versions"]["policy"] == f"clm-policy/{new_version}"
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert len(statuses) > 10 and set(statuses) == {200}, sorted(set(statuses))

    # a corrupt new version: the reload fails, the old version keeps serving, readiness and metrics say so
    try:
        broken = register_copy("clm-policy", new_version, corrupt=True, workdir=tmp_path / "corrupt")
        failed = httpx.post(f"{base}/v1/admin/reload", headers=ADMIN, timeout=60)
        assert failed.status_code == 503 and "still serving" in failed.json()["detail"]
        after = httpx.get(f"{base}/v1/users/{user}/decision", headers=SCORE, timeout=10)
        assert after.status_code == 200 and after.json()["versions"]["policy"] == f"clm-policy/{new_version}"
        ready = httpx.get(f"{base}/readyz", timeout=10).json()
        assert ready["ready"] is True and ready["reload_failures"] == 1 and ready["last_reload_error"]
        assert "clm_reload_failures_total 1.0" in httpx.get(f"{base}/metrics", timeout=10).text
        assert broken != new_version
    finally:
        MlflowClient().set_registered_model_alias("clm-policy", "champion", "1")

    log = DecisionLog(log_url)
    try:
        versions = {
            row["versions"]["policy"] for row in log.decisions_for_user(served_world.user_ids[0], limit=1000)
        }
        everyone = set()
        for uid in served_world.user_ids[:50]:
            everyone |= {row["versions"]["policy"] for row in log.decisions_for_user(uid, limit=1000)}
        assert {"clm-policy/1", f"clm-policy/{new_version}"} <= everyone | versions
    finally:
        log.close()


def test_two_worker_processes_serve(served_world, api_keys, tmp_path: Path) -> None:
    with running_server(served_world, api_keys, tmp_path, workers=2) as (base, _):
        with httpx.Client(timeout=30) as client:
            codes = [
                client.get(f"{base}/v1/users/{uid}/decision", headers=SCORE).status_code
                for uid in served_world.user_ids[:20]
            ]
        assert codes == [200] * 20
