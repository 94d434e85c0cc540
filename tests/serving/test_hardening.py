"""Nothing crashes, nothing is silently replaced (issue 17: models and limits), against the served world.

A booster that crashes LightGBM natively costs a refused reload (the app runs in a subprocess here: without
the trial load it would take pytest down) and, at start-up under 2 workers, a not-ready server — no crash
loop; the same live server closes slowloris connections and refuses an oversized chunked body. A bundle
registered under another target's name and a store built on other features are refused naming both sides;
outcome times past year 9999, control characters in ids, 100k unknown features, a conflicting repeated
outcome and unknown key scopes get clear 4xx answers or start-up errors."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from pydantic import ValidationError
from tests_serving_support import running_server
from typer.testing import CliRunner

from clm.cli import app as cli
from clm.config import load_config
from features.online import open_store
from models.artifacts import ArtifactRefused, digest_tag, manifest_digest, write_manifest
from models.bundle import BOOSTER_FILE
from serving.app import create_app
from serving.settings import ServingSettings
from serving.state import RegistryLoader
from tests.conftest import mlflow_store

ROOT = Path(__file__).resolve().parents[2]
SCORE = {"X-API-Key": "score-key"}
ADMIN = {"X-API-Key": "admin-key"}


def champion(name: str) -> str:
    return str(MlflowClient().get_model_version_by_alias(name, "champion").version)


def crashing_version(name: str, workdir: Path) -> str:
    """A new version of `name` (@champion not moved) whose booster.txt is a 150-tree booster cut to a third —
    LightGBM's parser segfaults on it — with the manifest resealed over it and its digest tagged as at
    registration, so only the trial load can catch it (a file damaged before it was registered)."""
    local = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{name}/{champion(name)}", dst_path=str(workdir / "model")
        )
    )
    bundle = local / "artifacts" / "bundle"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 40))
    params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, (x[:, 0] > 0).astype(int)), num_boost_round=150)
    text = booster.model_to_string().encode()
    (bundle / BOOSTER_FILE).write_bytes(text[: len(text) // 3])
    write_manifest(bundle)
    experiment = MlflowClient().create_experiment(
        f"crashing-{workdir}", artifact_location=str(workdir / "runs")
    )
    with mlflow.start_run(experiment_id=experiment, run_name=f"crashing-{name}") as run:
        mlflow.log_artifacts(str(local), artifact_path="model")
    created = mlflow.register_model(
        f"runs:/{run.info.run_id}/model", name, tags={digest_tag("bundle"): manifest_digest(bundle)}
    )
    return str(created.version)


APP_SCRIPT = """
import json, sys
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from clm.config import load_config
from serving.app import create_app
from serving.settings import ServingSettings

app = create_app(load_config(), ServingSettings())
with TestClient(app, raise_server_exceptions=False) as client:
    before = client.get("/readyz").json()
    MlflowClient().set_registered_model_alias("clm-churn", "champion", sys.argv[1])
    reload = client.post("/v1/admin/reload", headers={"X-API-Key": "admin-key"})
    after = client.get("/readyz").json()
    print("RESULT " + json.dumps({"before": before, "reload": [reload.status_code, reload.json()], "after": after}))
"""


def test_a_booster_that_crashes_lightgbm_costs_a_refused_reload_not_the_server(
    private_served_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLM_TRIAL_LOAD", "true")  # the served env turns it off for speed
    bad = crashing_version("clm-churn", tmp_path / "download")
    done = subprocess.run(
        [sys.executable, "-c", APP_SCRIPT, bad], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert done.returncode == 0, f"the app's process died (exit {done.returncode}): {done.stderr[-3000:]}"
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    status, body = result["reload"]
    assert status == 503, body
    assert (
        f"trial load of models:/clm-churn/{bad}" in body["detail"]
        and "crashed the loading process" in body["detail"]
    )
    assert result["after"]["ready"] is True and result["after"]["models"] == result["before"]["models"]
    assert "crashed the loading process" in result["after"]["last_reload_error"]
    assert f"trial load of models:/clm-churn/{bad}" in done.stderr  # the log line names the artifact


def raw_exchange(base: str, request: bytes) -> socket.socket:
    host, port = urlsplit(base).hostname, urlsplit(base).port
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(request)
    return sock


def test_live_two_workers_on_a_crashing_booster_start_not_ready_and_hostile_clients_are_cut_off(
    private_served_world, api_keys, tmp_path: Path
) -> None:
    with mlflow_store(private_served_world.tracking_uri):
        bad = crashing_version("clm-churn", tmp_path / "download")
        MlflowClient().set_registered_model_alias("clm-churn", "champion", bad)
    extra = {"CLM_HEADER_TIMEOUT_SECONDS": "1", "CLM_MAX_BODY_BYTES": "100000"}
    with running_server(
        private_served_world, api_keys, tmp_path, workers=2, extra_env=extra, ready_path="/healthz"
    ) as (base, _):
        # not ready, and why; the workers stay up (a crash loop would show new pids or refused connections)
        answers = []
        deadline = time.monotonic() + 120
        while len(answers) < 10 and time.monotonic() < deadline:
            response = httpx.get(f"{base}/readyz", timeout=10)
            if response.status_code == 503 and response.json()["last_reload_error"]:
                answers.append(response.json())
            time.sleep(0.3)
        assert len(answers) == 10, "no worker reported its failed start-up load"
        assert all(f"models:/clm-churn/{bad}" in a["last_reload_error"] and "crashed" in a["last_reload_error"]
                   for a in answers)  # fmt: skip
        pids = {a["worker"] for a in answers}
        time.sleep(3)
        later = {httpx.get(f"{base}/readyz", timeout=10).json()["worker"] for _ in range(10)}
        assert len(pids | later) <= 2, f"workers restarted: {sorted(pids | later)}"

        # slowloris: a request line and half the headers, then silence — closed after the header timeout
        sock = raw_exchange(base, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        started = time.monotonic()
        sock.settimeout(10)
        try:
            assert sock.recv(1024) == b"", "the server answered a request whose headers never ended"
        except TimeoutError:
            pytest.fail("a connection without complete headers was held open for 10 s")
        finally:
            sock.close()
        assert time.monotonic() - started < 5

        # a chunked body (no Content-Length) past the limit: 413 once the bytes read pass it
        sock = raw_exchange(
            base, b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
        )  # fmt: skip
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        sent, answer = 0, b""
        try:
            while sent < 5_000_000 and not select.select([sock], [], [], 0.05)[0]:
                sock.sendall(chunk)
                sent += 65536
            if sent >= 5_000_000:
                sock.sendall(b"0\r\n\r\n")
            answer = sock.recv(4096)
        except (BrokenPipeError, ConnectionResetError) as exc:
            pytest.fail(f"connection reset after {sent} bytes, before an answer: {exc}")
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 413"), (sent, answer[:200])
        assert sent < 2_000_000, f"{sent} bytes sent before the refusal"


def test_a_bundle_registered_under_another_targets_name_is_refused(private_served_env) -> None:
    client = MlflowClient()
    upgrade = client.get_model_version("clm-upgrade", champion("clm-upgrade"))
    moved = mlflow.register_model(upgrade.source, "clm-churn")
    client.set_registered_model_alias("clm-churn", "champion", str(moved.version))
    with pytest.raises(ArtifactRefused) as refused:
        RegistryLoader(load_config(), trial_load=False).load("champion")
    assert f"models:/clm-churn/{moved.version} holds 'clm-upgrade' (target upgrade)" in str(refused.value)
    assert "not the churn model 'clm-churn'" in str(refused.value)


def test_a_store_built_on_other_features_is_not_served(served_env, tmp_path: Path, monkeypatch) -> None:
    served = open_store(served_env.store_url)
    info = served.info()
    served.close()
    url = f"sqlite:///{tmp_path / 'online.db'}"
    store = open_store(url)
    user = served_env.user_ids[0]
    frame = pd.DataFrame({"user_id": [user], "cutoff": [pd.Timestamp(info.as_of)], "tenure_days": [40.0]})
    store.write_snapshot(frame, as_of=info.as_of, feature_version=info.feature_version)
    monkeypatch.setenv("CLM_ONLINE_STORE", url)
    with TestClient(create_app(load_config(), ServingSettings()), raise_server_exceptions=False) as client:
        assert client.get("/readyz").status_code == 200
        store.write_snapshot(frame, as_of=info.as_of, feature_version="other-windows")  # e.g. 7/14/28 days
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        mismatch = ready.json()["feature_mismatch"]
        assert (
            "the online store's snapshot has other-windows" in mismatch and info.feature_version in mismatch
        )
        reload = client.post("/v1/admin/reload", headers=ADMIN)
        assert reload.status_code == 503 and "other-windows" in reload.json()["detail"]
    store.close()

    # and a server started on that store does not load at all
    with TestClient(create_app(load_config(), ServingSettings()), raise_server_exceptions=False) as client:
        ready = client.get("/readyz").json()
        assert ready["ready"] is False and ready["models"] is None
        assert "other-windows" in ready["last_reload_error"] and "clm-churn/" in ready["last_reload_error"]


@pytest.fixture
def client(served_env):
    with TestClient(create_app(load_config(), ServingSettings()), raise_server_exceptions=False) as client:
        client.world = served_env
        yield client


def test_hostile_requests_get_short_clear_refusals(client) -> None:
    # an outcome time that has no UTC time (past 9999-12-31 UTC): 422 naming the field, not a 500
    decision = client.post("/v1/decisions", json={"features": {"tenure_days": 40}}, headers=SCORE)
    assert decision.status_code == 200, decision.text
    decision_id = decision.json()["decision_id"]
    outcome = {"decision_id": decision_id, "action_taken": "no_action", "outcome": "retained", "value": 1.0}
    late = client.post("/v1/outcomes", json={**outcome, "ts": "9999-12-31T23:59:59-12:00"}, headers=SCORE)
    assert late.status_code == 422 and late.json()["detail"][0]["loc"] == ["body", "ts"], late.text

    # NUL and other control characters in ids
    for body in ({**outcome, "decision_id": "abc\u0000def"}, {**outcome, "outcome": "re\ntained"}):
        refused = client.post("/v1/outcomes", json={**body, "ts": "2026-01-01T00:00:00Z"}, headers=SCORE)
        assert refused.status_code == 422, refused.text
    assert client.get("/v1/users/u%00x/decision", headers=SCORE).status_code == 422
    nul_user = client.post("/v1/decisions", json={"user_id": "u\u0000"}, headers=SCORE)
    assert nul_user.status_code == 422 and nul_user.json()["detail"][0]["loc"] == ["body", "user_id"]

    # a repeated outcome: the same payload is a harmless duplicate, a different one is refused, naming it
    ts = "2026-01-01T00:00:00Z"
    assert (
        client.post("/v1/outcomes", json={**outcome, "ts": ts}, headers=SCORE).json()["status"] == "recorded"
    )
    assert (
        client.post("/v1/outcomes", json={**outcome, "ts": ts}, headers=SCORE).json()["status"] == "duplicate"
    )
    conflict = client.post("/v1/outcomes", json={**outcome, "ts": ts, "value": 2.0}, headers=SCORE)
    assert conflict.status_code == 409 and "value 1.0 (this request: 2.0)" in conflict.json()["detail"]

    # 100k unknown feature names (~1 MB): a short 422 naming the first few and the count
    features = {f"x{i}": 1 for i in range(100_000)}
    many = client.post("/v1/decisions", json={"features": features}, headers=SCORE)
    assert many.status_code == 422 and len(many.content) < 10_000, len(many.content)
    detail = many.json()["detail"]
    assert detail[0]["msg"] == "unknown feature 'x0'" and len(detail) == 21
    assert (
        detail[-1]["type"] == "too_many_errors"
        and "100000 errors in all (100000 unknown_feature)" in detail[-1]["msg"]
    )

    # a chunked body past the limit, through the app itself
    def chunks():
        for _ in range(40):
            yield b" " * 100_000

    chunked = client.post(
        "/v1/decisions", content=chunks(), headers={**SCORE, "Content-Type": "application/json"}
    )
    assert chunked.status_code == 413, chunked.text


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"a-long-score-key": ["scroe"]}, "unknown scope(s) 'scroe'"),
        ({"adm12": ["score", "admin"]}, "admin key ad…(5 characters) is shorter than 8 characters"),
    ],
)
def test_bad_api_key_configuration_is_a_start_up_error_naming_it(keys, message, monkeypatch) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ServingSettings(api_keys=keys)
    monkeypatch.setenv("CLM_API_KEYS", json.dumps(keys))
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2 and message in result.output, result.output
