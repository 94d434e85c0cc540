"""HTTP serving: requests/s and latency of the decision API under a bounded `wrk` load on loopback, against a
FastAPI hello-world (the framework's ceiling on this machine) and `mlflow models serve` of the churn model
(one probability per request: no explanation, stage or policy), each with 1 and 2 workers; plus the
in-process cost of one decision (`Scorer.decide`, one thread, no HTTP) and of the two models' predict and
pred_contrib on one encoded row. The GET route reads the decision cache (serving/cache.py: every stored user
decided in bulk when the models load); POST decides in full. `--cases bulk` adds the cache's memory per
user at several store sizes (how it grows) and the batch path of `clm score --explain` (decide, TreeSHAP,
reasons in en and zh) over `--batch-users` users, extrapolated to 1M.

Usage: python benchmarks/serve.py [--duration 20] [--connections 16] [--threads 2] [--world DIR] [--keep]
                                 [--cases all|http|bulk] [--cache-users 3000 20000] [--batch-users 200000]

The world (simulated users, churn/upgrade models and the policy registered and promoted in a SQLite MLflow
store, an online-store snapshot) is built in the run's temp dir, or in --world DIR, where a later run reuses
it. Servers run as separate process groups with their logs in the run's temp dir (kept with --keep); wrk runs
from another process on 127.0.0.1 and competes with them for the machine's cores, and so does anything else
running, so each case also reports the cores its server, wrk and everything else used (from /proc) and the
server's CPU time per request, which contention does not inflate. Prints one table; nothing is asserted.

"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# `python benchmarks/serve.py` puts benchmarks/ first on sys.path, where benchmarks/features.py would
# shadow the `features` package: resolve our imports from the repository root instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from clm.config import load_config
from clm.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # not resolved: the venv's bin/ holds clm, uvicorn and mlflow
WORLD_FILE = "world.json"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
API_KEY = "bench"
STARTUP_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 15.0
WRK_TIMEOUT_SECONDS = 10
USER_IDS_IN_SCRIPT = 1000
WORKER_KILLED = "] died"  # uvicorn's supervisor: "Child process [PID] died"
# `clm serve` itself, with a light __main__: spawned workers re-import the parent's __main__ before they can
# answer uvicorn's 5 s health check, and the `clm` script's __main__ imports the whole CLI

# --------------------------------------------------------------------------------------------------
# The world: data, registered and promoted models, an online-store snapshot


@dataclasses.dataclass(frozen=True)
class World:
    root: Path
    tracking_uri: str
    store_url: str
    as_of: str
    user_ids: list[str]

    @classmethod
    def load(cls, root: Path) -> World | None:
        """The world built earlier in `root`, or None when it holds none (world.json is written last)."""
        path = root / WORLD_FILE
        if not path.exists():
            return None
        meta = json.loads(path.read_text())
        return cls(root, meta["tracking_uri"], meta["store_url"], meta["as_of"], meta["user_ids"])


def build_world(root: Path, *, users: int, days: int, seed: int) -> World:
    """What `clm demo` builds, in `root`: simulate, train and promote churn and upgrade, fit and promote the
    policy, write the latest feature vectors to a SQLite online store."""
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines would bury the progress
    from features.jobs import materialize_latest
    from features.registry import FeatureParams
    from simulation.io import simulate_to_directory
    from training import tracking
    from training.policy import train_policy
    from training.promote import promote_model
    from training.train import train

    root.mkdir(parents=True, exist_ok=True)
    data = root / "world"
    uri = f"sqlite:///{(root / 'mlflow.db').resolve()}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    tracking.configure(uri)
    config = load_config(Settings().config)
    started = time.perf_counter()

    def step(message: str) -> None:
        print(f"  [{time.perf_counter() - started:5.0f} s] {message}", flush=True)

    step(f"simulating {users:,} users over {days} days")
    simulate_to_directory(data, n_users=users, days=days, seed=seed, start=dt.date(2025, 1, 1))
    step("training churn and upgrade")
    try:
        train(data, ["churn", "upgrade"], config=config, project_root=root, truth_dir=data / "truth")
        training = config.training
        for name in (
            config.models.churn.registered_name,
            config.models.upgrade.registered_name,
        ):
            _promoted(name, promote_model(name, metric=training.promotion_metric,
                                          tolerance=training.promotion_tolerance))  # fmt: skip
        step("fitting the policy")
        trained = train_policy(data, config=config, project_root=root, truth_dir=data / "truth")
        # the benchmark needs a champion policy whatever its offline value: a large tolerance, as the tests do
        _promoted(
            trained.registered_name,
            promote_model(trained.registered_name, metric="test.offline.dr", tolerance=1e9),
        )
    finally:
        if mlflow.active_run():
            mlflow.end_run()
    step("writing the online store")
    store_url = f"sqlite:///{(root / 'online.db').resolve()}"
    info, frame = materialize_latest(data, store_url, params=FeatureParams.from_config(config.features))
    as_of = info.as_of
    user_ids = sorted(frame["user_id"].astype(str))
    meta = {"tracking_uri": uri, "store_url": store_url, "as_of": as_of.isoformat(), "user_ids": user_ids,
            "users": users, "days": days, "seed": seed}  # fmt: skip
    (root / WORLD_FILE).write_text(json.dumps(meta))
    step(f"world ready: {len(user_ids):,} users in the store as of {as_of}")
    return World(root, uri, store_url, as_of.isoformat(), user_ids)


def _promoted(name: str, decision: Any) -> None:
    if not decision.promote:
        raise SystemExit(f"{name} was not promoted to @champion: {'; '.join(decision.reasons)}")


# --------------------------------------------------------------------------------------------------
# In-process cost: one decision, and the models alone, on one thread


@dataclasses.dataclass(frozen=True)
class Timing:
    median_ms: float
    p99_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Timing:
        values = np.asarray(seconds) * 1000.0
        return cls(float(np.median(values)), float(np.percentile(values, 99)))


@dataclasses.dataclass(frozen=True)
class InProcess:
    calls: int
    decide: Timing
    store_read: Timing
    encode_rows: Timing  # both models' encode_row
    predict: Timing  # both models' score_matrix (raw predict + calibration)
    pred_contrib: Timing  # both models' contributions_matrix (exact TreeSHAP)
    models: Timing  # the three above, summed per call
    n_trees: dict[str, int]


def measure_in_process(world: World, calls: int) -> tuple[InProcess, Any]:
    """Median and p99 of `Scorer.decide` over `calls` stored users, and of the models' parts on one row each;
    also returns the loaded ModelSet (the other cases need the churn model's feature names)."""
    from features.online import open_store
    from models.frame import encode_row
    from models.scoring import contributions_matrix, score_matrix
    from serving.scorer import Scorer
    from serving.state import RegistryLoader

    config = load_config(Settings().config)
    models = RegistryLoader(config).load("champion")
    scorer = Scorer(config.serving)
    ids = world.user_ids[:]
    random.Random(0).shuffle(ids)
    ids = ids[: min(len(ids), calls)]
    timer = time.perf_counter
    with open_store(world.store_url) as store:
        reads = []
        rows = []
        for user_id in ids:
            started = timer()
            row = store.read(user_id)
            reads.append(timer() - started)
            rows.append(row)
    for row in rows[:50]:  # first calls allocate
        scorer.decide(models, row.values, user_id=row.user_id, as_of=row.as_of)
    decide = []
    for k in range(calls):
        row = rows[k % len(rows)]
        started = timer()
        scorer.decide(models, row.values, user_id=row.user_id, as_of=row.as_of)
        decide.append(timer() - started)
    bundles = (models.churn, models.upgrade)
    encode, predict, contrib, total = [], [], [], []
    for k in range(calls):
        values = {name: rows[k % len(rows)].values.get(name) for name in models.policy.feature_names}
        parts = [0.0, 0.0, 0.0]
        for bundle in bundles:
            started = timer()
            matrix = encode_row(values, bundle.feature_names, bundle.categories)
            encoded = timer()
            score_matrix(matrix, bundle)
            predicted = timer()
            contributions_matrix(matrix, bundle)
            explained = timer()
            parts[0] += encoded - started
            parts[1] += predicted - encoded
            parts[2] += explained - predicted
        encode.append(parts[0])
        predict.append(parts[1])
        contrib.append(parts[2])
        total.append(sum(parts))
    n_trees = {b.name: int(b.booster.num_trees()) for b in bundles}
    result = InProcess(calls, Timing.of(decide), Timing.of(reads), Timing.of(encode), Timing.of(predict),
                       Timing.of(contrib), Timing.of(total), n_trees)  # fmt: skip
    return result, models


# --------------------------------------------------------------------------------------------------
# Bulk: the decision cache (memory per user) and batch decisions with explanations


@dataclasses.dataclass(frozen=True)
class CachePoint:
    users: int
    build_seconds: float
    bytes_traced: int  # the process's resident memory grown by the build (the cache and what the heap kept)
    bytes_packed: int  # of which the packed bodies


@dataclasses.dataclass(frozen=True)
class Bulk:
    cache: list[CachePoint]
    batch_users: int
    batch_seconds: float  # decide + TreeSHAP + reasons (en, zh) for batch_users
    batch_parts: dict[str, float]


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def replicated_rows(world: World, n: int) -> tuple[list[str], list[dict[str, Any]], Any]:
    """`n` users: the world's stored rows repeated under new ids (same features, distinct exploration draws)."""
    from features.online import open_store

    with open_store(world.store_url) as store:
        rows = store.read_many(world.user_ids)
        info = store.info()
    base = [rows[u].values for u in world.user_ids if u in rows]
    ids = [f"b{k:07d}" for k in range(n)]
    return ids, [base[k % len(base)] for k in range(n)], info


def measure_bulk(
    world: World, models: Any, run_dir: Path, cache_users: Sequence[int], batch_users: int
) -> Bulk:
    """The cache built over stores of `cache_users` users (tracemalloc: the heap it holds, hence bytes per
    user and how it grows), and `batch_users` decisions with explanations through the bulk path `clm score
    --explain` takes (one snapshot, exploration drawn), timed in its parts."""
    import gc

    import pandas as pd

    from features.online import open_store
    from models.explain import population_contributions, reason_columns
    from serving.cache import build_cache
    from serving.scorer import Scorer

    config = load_config(Settings().config)
    scorer = Scorer(config.serving)
    points = []
    for n in cache_users:
        ids, values, info = replicated_rows(world, n)
        url = f"sqlite:///{run_dir / f'cache-{n}.db'}"
        frame = pd.DataFrame(values).assign(user_id=ids, cutoff=pd.Timestamp(info.as_of))
        with open_store(url) as store:
            store.write_snapshot(frame, as_of=info.as_of, feature_version=info.feature_version)
            del frame, values
            gc.collect()
            before = rss_bytes()
            started = time.perf_counter()
            cache = build_cache(models, scorer, store, explore=True, max_users=n)
            seconds = time.perf_counter() - started
            gc.collect()
            held = rss_bytes() - before
        assert cache is not None and cache.users() == n
        points.append(CachePoint(n, seconds, held, cache.nbytes()))
        print(f"  cache of {n:,} users: built in {seconds:.1f} s, {held / n:,.0f} B/user held "
              f"({cache.nbytes() / n:,.0f} B/user packed bodies)", flush=True)  # fmt: skip
        del cache
    ids, values, info = replicated_rows(world, batch_users)
    frame = pd.DataFrame(values).assign(user_id=ids, cutoff=info.as_of)
    del values
    parts = {}
    started = time.perf_counter()
    decided = models.decide(frame, explore=True)
    parts["decide_population"] = time.perf_counter() - started
    mark = time.perf_counter()
    explained = population_contributions(frame, models, decided.decisions, config.serving.explain_top_k)
    parts["TreeSHAP (every model)"] = time.perf_counter() - mark
    mark = time.perf_counter()
    columns = reason_columns(frame, explained, models.registry)
    parts["reasons en + zh"] = time.perf_counter() - mark
    total = time.perf_counter() - started
    assert len(columns["churn_reasons_zh"]) == batch_users
    print(f"  batch of {batch_users:,} decisions with explanations: {total:.1f} s", flush=True)
    return Bulk(points, batch_users, total, parts)


# --------------------------------------------------------------------------------------------------
# Servers: one process group each, logs to files, always stopped


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http(method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:  # fmt: skip
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclasses.dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    ready_path: str
    port: int
    workers: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _stop(process: subprocess.Popen, port: int) -> None:
    """SIGTERM the whole process group, SIGKILL what is left, then wait for the port to close."""
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; workers that outlived it are still in the group
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    deadline = time.monotonic() + 10.0
    while port_in_use(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    if port_in_use(port):
        raise RuntimeError(f"port {port} is still open after stopping process group {process.pid}")


@contextmanager
def running(server: Server) -> Iterator[int]:
    """Start the server in its own process group, wait until every worker has started and the ready path
    answers 200, and stop the group afterwards, whatever happens."""
    if port_in_use(server.port):
        raise RuntimeError(f"port {server.port} is already in use")
    with server.log_path.open("ab") as log_file:
        process = subprocess.Popen(
            server.command, env=server.env, cwd=server.log_path.parent, stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        started = time.monotonic()
        deadline = started + STARTUP_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited with {process.returncode}:\n{_tail(server.log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} not ready after {STARTUP_TIMEOUT_SECONDS:.0f} s:\n"
                                   f"{_tail(server.log_path)}")  # fmt: skip
            text = server.log_path.read_text(errors="replace")
            if WORKER_KILLED in text:
                raise RuntimeError(
                    f"{server.name}: uvicorn's supervisor killed a worker before it was ready:\n{_tail(server.log_path)}"
                )
            # uvicorn logs this once per worker, after the app's startup; a worker accepts only after it
            complete = text.count("Application startup complete")
            if complete >= server.workers:
                try:
                    status, _ = http("GET", server.url + server.ready_path, timeout=5.0)
                except OSError:
                    status = 0
                if status == 200:
                    break
            time.sleep(0.25)
        print(
            f"  {server.name} with {server.workers} worker(s) ready in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        yield process.pid  # the process group's id
    finally:
        _stop(process, server.port)


# --------------------------------------------------------------------------------------------------
# Load: wrk with a Lua script whose done() prints the numbers as JSON

LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def lua_long_string(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def lua_static(method: str, body: bytes | None, headers: dict[str, str]) -> str:
    """One request, the same every time."""
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = {lua_long_string(body.decode())}")
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n" + LUA_DONE


def lua_rotating_paths(paths: Sequence[str], headers: dict[str, str]) -> str:
    """GET each path in turn; wrk's threads start at different offsets."""
    listed = ",\n".join(json.dumps(p) for p in paths)
    header_table = ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    return (
        f"""
local paths = {{
{listed}
}}
local headers = {{{header_table}}}
local threads = 0
setup = function(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end
local i = 0
init = function(args)
  i = offset or 0
end
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1], headers)
end
"""
        + LUA_DONE
    )


@dataclasses.dataclass(frozen=True)
class Load:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # HTTP status >= 400 (as wrk counts them) + connect/read/write errors + timeouts
    server_cpu_s: float  # CPU time of the server's process group during the load
    wrk_cpu_s: float
    machine_busy_s: float  # CPU time of every process on the machine

    @property
    def per_second(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def server_cpu_ms_per_request(self) -> float:
        return 1000.0 * self.server_cpu_s / self.requests if self.requests else float("nan")

    def cores(self) -> tuple[float, float, float]:
        """Average cores busy with the server, with wrk, and with anything else on the machine."""
        other = max(0.0, self.machine_busy_s - self.server_cpu_s - self.wrk_cpu_s)
        return self.server_cpu_s / self.duration_s, self.wrk_cpu_s / self.duration_s, other / self.duration_s


def machine_busy_seconds() -> float:
    """CPU seconds spent on the machine since boot, all cores (/proc/stat less idle and iowait)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes in a process group."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path("/proc", entry, "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # fields after the command: state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def run_wrk(url: str, script: Path, *, duration_s: int, connections: int, threads: int, pgid: int) -> Load:
    """wrk against `url`, with the CPU time the server's process group, wrk and the machine spent meanwhile."""
    command = [shutil.which("wrk") or "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s",
               f"--timeout={WRK_TIMEOUT_SECONDS}s", "-s", str(script), url]  # fmt: skip
    machine, server = machine_busy_seconds(), group_cpu_seconds(pgid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = group_cpu_seconds(pgid) - server
    machine = machine_busy_seconds() - machine
    wrk_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no RESULT line:\n{done.stdout}\n{done.stderr}")
    r = json.loads(line.removeprefix("RESULT "))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return Load(r["requests"], r["duration_us"] / 1e6, r["p50_us"] / 1000.0, r["p99_us"] / 1000.0, errors,
                server, wrk_cpu, machine)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The cases

HELLO_APP = '''"""A FastAPI hello-world: the framework's ceiling for the serving benchmark."""
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello() -> dict:
    return {"message": "hello"}


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}
'''


@dataclasses.dataclass(frozen=True)
class Target:
    """One request shape to load a server with."""

    label: str
    method: str
    path: str  # what the check request asks for (and the URL wrk is given)
    lua: str
    body: bytes | None
    headers: dict[str, str]
    check: Callable[[dict], bool]  # is a 200 answer the one we mean to measure?
    settle_s: int = 0  # load before the warm-up, unmeasured: the contact state settles (see ours_get)


@dataclasses.dataclass(frozen=True)
class Row:
    system: str
    label: str
    workers: int
    load: Load


def check_then_load(
    server: Server, pgid: int, target: Target, run_dir: Path, args: argparse.Namespace
) -> Load:
    """One request checked by hand (200 and the expected body), a short warm-up, then the measured load."""
    status, raw = http(target.method, server.url + target.path, body=target.body, headers=target.headers)
    if status != 200:
        raise RuntimeError(f"{server.name} {target.label}: status {status}: {raw[:500]!r}")
    if not target.check(json.loads(raw)):
        raise RuntimeError(f"{server.name} {target.label}: unexpected answer {raw[:500]!r}")
    script = run_dir / f"{server.name}-{target.label}.lua".replace(" ", "_").replace("/", "_")
    script.write_text(target.lua)
    warmup = max(1, min(3, args.duration // 5))
    load_args = {"connections": args.connections, "threads": args.threads, "pgid": pgid}
    run_wrk(server.url + target.path, script, duration_s=warmup + target.settle_s, **load_args)
    load = run_wrk(server.url + target.path, script, duration_s=args.duration, **load_args)
    cores = load.cores()
    print(f"  {server.name:<12} {target.label:<28} {server.workers} worker(s): {load.per_second:7.1f} req/s, "
          f"p50 {load.p50_ms:7.2f} ms, p99 {load.p99_ms:7.2f} ms, errors {load.errors}; cores: server "
          f"{cores[0]:.2f}, wrk {cores[1]:.2f}, others {cores[2]:.2f}", flush=True)  # fmt: skip
    return load


def server_env(world: World, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        MLFLOW_TRACKING_URI=world.tracking_uri,
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def feature_body(values: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The vector as JSON can carry it: NaN as null."""
    out = {}
    for name in names:
        value = values.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[name] = value
    return out


def fullest_row(world: World, names: Sequence[str]) -> Any:
    """Of a sample of stored users, the one with the fewest missing features: a realistic full vector."""
    from features.online import open_store

    with open_store(world.store_url) as store:
        rows = store.read_many(world.user_ids[:500])
    return min(rows.values(), key=lambda row: (sum(row.values.get(n) is None for n in names), row.user_id))


def serving_rows(world: World, models: Any, run_dir: Path, args: argparse.Namespace) -> list[Row]:
    from features.registry import FeatureParams, build_registry, feature_names

    config = load_config(Settings().config)
    names = feature_names(build_registry(FeatureParams.from_config(config.features)))
    sample = fullest_row(world, names)
    ids = world.user_ids[:]
    random.Random(1).shuffle(ids)
    key = {"X-API-Key": API_KEY}
    json_headers = {"Content-Type": "application/json"}
    paths = [f"/v1/users/{urllib.parse.quote(u, safe='')}/decision" for u in ids[:USER_IDS_IN_SCRIPT]]

    def is_decision(answer: dict) -> bool:
        return "decision_id" in answer and "explanations" in answer

    # Every GET logs a decision, and a logged contact changes the user's next decision (cooldown, cap): the
    # first GETs of each user are decided again in full until the user reaches the cap (no_action), then
    # their contact state holds and each GET is the cached entry. `settle_s` loads through that first.
    ours_get = Target("GET /v1/users/{id}/decision", "GET", paths[0], lua_rotating_paths(paths, key), None, key,
                      is_decision, settle_s=max(3, args.duration))  # fmt: skip
    post_body = json.dumps({"features": feature_body(sample.values, names)}).encode()
    ours_post = Target("POST /v1/decisions", "POST", "/v1/decisions",
                       lua_static("POST", post_body, {**key, **json_headers}), post_body, {**key, **json_headers},
                       is_decision)  # fmt: skip
    hello = Target("GET /", "GET", "/", lua_static("GET", None, {}), None, {},
                   lambda answer: answer == {"message": "hello"})  # fmt: skip
    churn_names = list(models.churn.feature_names)
    mlflow_body = json.dumps(
        {
            "dataframe_split": {
                "columns": churn_names,
                "data": [list(feature_body(sample.values, churn_names).values())],
            }
        }
    ).encode()
    mlflow_target = Target("POST /invocations", "POST", "/invocations", lua_static("POST", mlflow_body, json_headers),
                           mlflow_body, json_headers, lambda answer: "predictions" in answer)  # fmt: skip
    (run_dir / "hello_app.py").write_text(HELLO_APP)

    churn_model = config.models.churn.registered_name
    rows: list[Row] = []
    for workers in (1, 2):
        port = free_port()
        ours = Server(
            "ours", [str(VENV_BIN / "clm"), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers",
                     str(workers), "--log-level", "info"],
            server_env(world, CLM_ONLINE_STORE=world.store_url, CLM_API_KEYS=json.dumps({API_KEY: ["score"]}),
                       CLM_DECISION_LOG=f"sqlite:///{run_dir / f'decisions-{workers}-{port}.db'}",
                       CLM_EXPLORATION="false", CLM_DATA_DIR=str(run_dir)),
            "/readyz", port, workers, run_dir / f"ours-{workers}-{port}.log",
        )  # fmt: skip
        with running(ours) as pgid:
            for target in (ours_get, ours_post):
                rows.append(
                    Row("ours", target.label, workers, check_then_load(ours, pgid, target, run_dir, args))
                )

        port = free_port()
        hello_server = Server(
            "hello-world", [str(VENV_BIN / "uvicorn"), "hello_app:app", "--app-dir", str(run_dir), "--host",
                            "127.0.0.1", "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
                            "--http", "httptools", "--log-level", "info", "--no-access-log"],
            server_env(world), "/healthz", port, workers, run_dir / f"hello-{workers}.log",
        )  # fmt: skip
        with running(hello_server) as pgid:
            rows.append(
                Row(
                    "hello-world",
                    hello.label,
                    workers,
                    check_then_load(hello_server, pgid, hello, run_dir, args),
                )
            )

        port = free_port()
        mlflow_server = Server(
            "mlflow-serve", [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{churn_model}@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers)],
            server_env(world), "/ping", port, workers, run_dir / f"mlflow-{workers}.log",
        )  # fmt: skip
        with running(mlflow_server) as pgid:
            rows.append(Row("mlflow-serve", mlflow_target.label, workers,
                            check_then_load(mlflow_server, pgid, mlflow_target, run_dir, args)))  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------------
# The report


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def report(rows: list[Row], costs: InProcess, args: argparse.Namespace) -> str:
    lines = [
        f"serving benchmark: wrk {args.threads} threads, {args.connections} connections, {args.duration} s per case "
        f"(after a short warm-up), 127.0.0.1; {os.cpu_count()} cores shared by the servers, wrk and whatever else runs",
        "",
        f"{'case':<42} {'workers':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  "
        f"{'server CPU ms/req':>17}  {'cores: server / wrk / others':>28}",
    ]
    for row in rows:
        load = row.load
        server, wrk, others = load.cores()
        lines.append(
            f"{row.system + ' ' + row.label:<42} {row.workers:>7} {load.per_second:>8.1f} {load.p50_ms:>8.2f} "
            f"{load.p99_ms:>8.2f} {load.errors:>6}  {load.server_cpu_ms_per_request:>17.2f}  "
            f"{f'{server:.2f} / {wrk:.2f} / {others:.2f}':>28}"
        )
    by = {(r.system, r.label, r.workers): r.load for r in rows}
    lines += ["", f"{'ours ÷ other':<42} {'workers':>7} {'÷hello req/s':>13} {'÷hello p99':>11} "
                  f"{'÷mlflow req/s':>14} {'÷mlflow p99':>12}"]  # fmt: skip
    for r in rows:
        if r.system != "ours":
            continue
        hello = by[("hello-world", "GET /", r.workers)]
        mlflow = by[("mlflow-serve", "POST /invocations", r.workers)]
        lines.append(
            f"{r.label:<42} {r.workers:>7} {_ratio(r.load.per_second, hello.per_second):>13} "
            f"{_ratio(r.load.p99_ms, hello.p99_ms):>11} {_ratio(r.load.per_second, mlflow.per_second):>14} "
            f"{_ratio(r.load.p99_ms, mlflow.p99_ms):>12}"
        )
    trees = ", ".join(f"{name} {n} trees" for name, n in costs.n_trees.items())
    parts = [
        ("Scorer.decide (both models + TreeSHAP + policy)", costs.decide),
        ("  both models: encode_row", costs.encode_rows),
        ("  both models: predict (score_matrix)", costs.predict),
        ("  both models: pred_contrib (contributions_matrix)", costs.pred_contrib),
        ("  both models: encode + predict + pred_contrib", costs.models),
        ("online store read (the GET route's)", costs.store_read),
    ]
    width = max(len(label) for label, _ in parts) + 2
    lines += [
        "",
        f"in process, one thread, no HTTP: {costs.calls:,} calls over stored users ({trees})",
        f"{'':<{width}} {'median ms':>10} {'p99 ms':>9}",
    ]
    for label, timing in parts:
        lines.append(f"{label:<{width}} {timing.median_ms:>10.3f} {timing.p99_ms:>9.3f}")
    lines += [
        "",
        "share of the server's CPU time per request (1 worker) that the in-process decision explains:",
    ]
    for r in rows:
        if r.system != "ours" or r.workers != 1 or r.label.startswith("GET"):  # a cached GET decides nothing
            continue
        per_request = r.load.server_cpu_ms_per_request
        decide = costs.decide.median_ms / per_request
        lines.append(
            f"  {r.label:<30} {per_request:6.2f} ms CPU per request: Scorer.decide {decide:6.1%} (the models alone "
            f"{costs.models.median_ms / per_request:5.1%}); HTTP, routing, validation, response and decision log "
            f"{1 - decide:6.1%}"
        )
    return "\n".join(lines)


def bulk_report(bulk: Bulk) -> str:
    lines = ["", "decision cache per worker (every stored user, en + zh, packed; resident memory the build added):",
             f"{'users':>10} {'build s':>9} {'RSS MB':>9} {'B/user':>8} {'packed B/user':>14}"]  # fmt: skip
    for p in bulk.cache:
        lines.append(f"{p.users:>10,} {p.build_seconds:>9.1f} {p.bytes_traced / 1e6:>9.1f} "
                     f"{p.bytes_traced / p.users:>8,.0f} {p.bytes_packed / p.users:>14,.0f}")  # fmt: skip
    if len(bulk.cache) >= 2:
        a, b = bulk.cache[0], bulk.cache[-1]
        slope = (b.bytes_traced - a.bytes_traced) / (b.users - a.users)
        build = (b.build_seconds - a.build_seconds) / (b.users - a.users)
        lines.append(f"growth: {slope:,.0f} B per added user (linear): 1M users ≈ {slope * 1e6 / 1e9:.2f} GB per "
                     f"worker, built in ≈ {build * 1e6 / 60:.0f} min per worker")  # fmt: skip
    per_user = bulk.batch_seconds / bulk.batch_users
    lines += ["", f"batch (the path of `clm score --explain`): {bulk.batch_users:,} decisions with explanations "
                  f"in {bulk.batch_seconds:.1f} s; 1M extrapolated ≈ {per_user * 1e6 / 60:.1f} min"]  # fmt: skip
    for name, seconds in bulk.batch_parts.items():
        lines.append(f"  {name:<28} {seconds:8.1f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=20, help="Seconds of load per case.")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads.")
    parser.add_argument(
        "--world", type=Path, help="Build the world here, or reuse the one built here before."
    )
    parser.add_argument("--users", type=int, default=3000, help="Simulated users (when building the world).")
    parser.add_argument("--days", type=int, default=270, help="Simulated days (when building the world).")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--calls", type=int, default=2000, help="In-process decisions timed.")
    parser.add_argument(
        "--keep", action="store_true", help="Keep the run's temp dir (server logs, Lua scripts)."
    )
    parser.add_argument("--cases", choices=("all", "http", "bulk"), default="all",
                        help="HTTP cases, the bulk figures (cache memory, batch), or both.")  # fmt: skip
    parser.add_argument("--cache-users", type=int, nargs="+", default=[3000, 20000],
                        help="Store sizes the cache is built over (memory per user, growth).")  # fmt: skip
    parser.add_argument("--batch-users", type=int, default=200_000,
                        help="Batch decisions with explanations timed (extrapolated to 1M).")  # fmt: skip
    args = parser.parse_args()
    if args.duration < 1 or args.connections < 1 or args.threads < 1 or args.connections < args.threads:
        parser.error("--duration, --threads and --connections must be positive, connections ≥ threads")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # a SIGTERM unwinds like Ctrl-C, so every server's process group is stopped on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-bench-tools.sh")], check=True)

    run_dir = Path(tempfile.mkdtemp(prefix="clm-bench-serve-"))
    try:
        world_dir = args.world.resolve() if args.world else run_dir / "world"
        world = World.load(world_dir)
        if world is None:
            print(f"building the world in {world_dir}", flush=True)
            world = build_world(world_dir, users=args.users, days=args.days, seed=args.seed)
        else:
            print(f"reusing the world in {world_dir} ({len(world.user_ids):,} users as of {world.as_of})")
        os.environ["MLFLOW_TRACKING_URI"] = world.tracking_uri
        from training import tracking

        tracking.configure(world.tracking_uri)

        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
        print(f"in-process cost of one decision ({args.calls:,} calls)", flush=True)
        costs, models = measure_in_process(world, args.calls)
        rows = []
        if args.cases in ("all", "http"):
            print(f"HTTP cases (logs in {run_dir})", flush=True)
            rows = serving_rows(world, models, run_dir, args)
        bulk = None
        if args.cases in ("all", "bulk"):
            print("bulk: the decision cache and batch decisions", flush=True)
            bulk = measure_bulk(world, models, run_dir, args.cache_users, args.batch_users)
        print()
        if rows:
            print(report(rows, costs, args))
        if bulk is not None:
            print(bulk_report(bulk))
        print(
            f"load average at the end {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"
        )
    finally:
        if args.keep:
            print(f"\nkept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
