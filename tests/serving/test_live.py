"""The API as users meet it: `clm serve` in its own process on 127.0.0.1, real HTTP. A reload while a client
keeps asking (zero errors, both versions in the decision log) and a failed reload that keeps the old
models serving; kill -9 under load loses no answered decision; a reload reaches both of 2 workers, and so
does a reviewer's session."""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import mlflow
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from tests_serving_support import running_server

from serving.decision_log import DecisionLog
from serving.review import SESSION_COOKIE
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
        # in an experiment of its own (the store has no `Default`: training.tracking deletes it while empty),
        # its artifacts in the test's directory, not the working directory's mlruns/
        experiment = client.get_experiment_by_name("clm-test-corrupt-copies")
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(
                "clm-test-corrupt-copies", artifact_location=(workdir.parent / "corrupt-copies").as_uri()
            )
        )
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"corrupt-{name}") as run:
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
        # a reviewer session issued by one worker opens the pages on both (each request a new connection)
        login = httpx.post(f"{base}/review/login", data={"api_key": "review-key"}, headers={"Origin": base})
        assert login.status_code == 303, login.text
        session = {SESSION_COOKIE: login.cookies[SESSION_COOKIE]}
        pages = [
            httpx.get(f"{base}/review/decisions/none", cookies=session, timeout=30).status_code
            for _ in range(20)
        ]
        assert pages == [404] * 20  # 401 from a worker that does not know the secret


def hammer_decisions(base: str, user_ids: list[str], stop: threading.Event, seen: list, threads: int = 4):
    """`threads` clients asking for decisions until `stop`; each answer is appended to `seen` as (status,
    decision_id or None, policy version or None). A connection error ends that client (the server died)."""

    def run(offset: int) -> None:
        with httpx.Client(timeout=10) as client:
            i = offset
            while not stop.is_set():
                uid = user_ids[i % len(user_ids)]
                i += threads
                try:
                    response = client.get(f"{base}/v1/users/{uid}/decision", headers=SCORE)
                except httpx.HTTPError:
                    return
                body = response.json() if response.status_code == 200 else {}
                seen.append(
                    (response.status_code, body.get("decision_id"), body.get("versions", {}).get("policy"))
                )

    workers = [threading.Thread(target=run, args=(offset,)) for offset in range(threads)]
    for worker in workers:
        worker.start()
    return workers


def test_kill_9_under_load_loses_no_answered_decision(served_world, api_keys, tmp_path: Path) -> None:
    """Every decision answered with 200 is in the decision log after the server's process group is killed
    with SIGKILL at a random moment under load, and the restarted server serves on the same log."""
    seen: list[tuple[int, str | None, str | None]] = []
    stop = threading.Event()
    with running_server(served_world, api_keys, tmp_path) as (base, log_url):
        worker = httpx.get(f"{base}/readyz", timeout=10).json()["worker"]
        clients = hammer_decisions(base, served_world.user_ids, stop, seen)
        time.sleep(random.uniform(2.0, 4.0))
        os.killpg(os.getpgid(worker), signal.SIGKILL)  # the supervisor and every worker, mid-request
        for client in clients:
            client.join(timeout=30)
        stop.set()
    answered = {decision_id for status, decision_id, _ in seen if status == 200}
    assert len(answered) > 20, f"only {len(answered)} decisions answered before the kill"
    assert {status for status, _, _ in seen} == {200}

    with running_server(served_world, api_keys, tmp_path) as (base, restarted_log_url):
        assert restarted_log_url == log_url
        again = httpx.get(f"{base}/v1/users/{served_world.user_ids[0]}/decision", headers=SCORE, timeout=10)
        assert again.status_code == 200
    # the restarted server's writer stores the killed one's orphaned journal and its own decisions — in the
    # background, not before /readyz or the response — and has drained both once it stopped
    stored = logged_decision_ids(log_url)
    lost = answered - stored
    print(f"kill -9 under load: {len(answered)} decisions answered with 200, {len(lost)} not in the log")
    assert lost == set()
    assert again.json()["decision_id"] in stored


def logged_decision_ids(log_url: str) -> set[str]:
    log = DecisionLog(log_url)
    try:
        with log.engine.connect() as conn:
            return set(conn.execute(sa.select(log.decisions_table.c.decision_id)).scalars())
    finally:
        log.close()


def test_a_reload_reaches_both_workers_without_a_failed_request(
    private_served_world, api_keys, tmp_path: Path
) -> None:
    """`clm serve --workers 2`: one admin reload, answered by one worker, reaches the other within its poll
    interval (plus the load); no request fails during the swap; /metrics adds both workers up."""
    world = private_served_world
    seen: list[tuple[int, str | None, str | None]] = []
    stop = threading.Event()
    with mlflow_store(world.tracking_uri), running_server(world, api_keys, tmp_path, workers=2) as (base, _):
        deadline = time.monotonic() + 60
        while len(httpx.get(f"{base}/readyz", timeout=10).json()["workers"]) < 2:
            assert time.monotonic() < deadline, "the second worker never reported"
            time.sleep(0.2)
        clients = hammer_decisions(base, world.user_ids, stop, seen)
        try:
            time.sleep(1.0)
            new_version = register_copy("clm-policy", "1")
            reloaded = httpx.post(f"{base}/v1/admin/reload", headers=ADMIN, timeout=60)
            assert reloaded.status_code == 200, reloaded.text
            answered_at = time.monotonic()
            expected = f"clm-policy/{new_version}"
            while True:
                workers = httpx.get(f"{base}/v1/models", headers=SCORE, timeout=10).json()["workers"]
                if len(workers) == 2 and all(w["versions"]["policy"] == expected for w in workers):
                    break
                assert time.monotonic() - answered_at < 30, workers
                time.sleep(0.05)
            lag = time.monotonic() - answered_at
            time.sleep(1.0)
        finally:
            stop.set()
            for client in clients:
                client.join(timeout=30)
            MlflowClient().set_registered_model_alias("clm-policy", "champion", "1")
        ready = httpx.get(f"{base}/readyz", timeout=10).json()
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
    print(f"both workers on {expected} {lag:.2f} s after the reload answered; {len(seen)} requests")
    assert len({w["pid"] for w in workers}) == 2
    assert all(w["versions"]["policy"] == expected for w in ready["workers"])
    statuses = {status for status, _, _ in seen}
    assert len(seen) > 20 and statuses == {200}, statuses
    assert {policy for _, _, policy in seen} == {"clm-policy/1", expected}
    decided = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("clm_decisions_total{")
    )
    assert decided == len(seen), "/metrics does not add up the decisions of both workers"
