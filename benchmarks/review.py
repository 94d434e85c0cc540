"""The reviewer pages: how long the overview takes to build (feature history over the cutoffs, every user's
decision, the figures), and the median time and size of each page against the JSON decision of the same
user in the same process (FastAPI's TestClient, no network; one thread of requests).

Usage: python benchmarks/review.py [--demo data/demo] [--users 20] [--builds 3]

Needs a `make demo` directory (its online store, event data and the MLflow store in mlruns/). Prints one
table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

# `python benchmarks/review.py` puts benchmarks/ first on sys.path, where benchmarks/features.py would
# shadow the `features` package: resolve our imports from the repository root instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(call, repeat: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        response = call()
        times.append(1000 * (time.perf_counter() - started))
        assert response.status_code == 200, response.text[:300]
        size = len(response.content)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=ROOT / "data" / "demo")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--builds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    demo = args.demo.resolve()
    if not (demo / "online.db").exists():
        sys.exit(f"{demo}/online.db is missing: run `make demo` first")
    os.environ.update(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}",
            "CLM_API_KEYS": json.dumps({"s": ["score"], "r": ["review"]}),
            "CLM_ONLINE_STORE": f"sqlite:///{demo / 'online.db'}",
            "CLM_DECISION_LOG": f"sqlite:///{demo / 'bench-decisions.db'}",
            "CLM_EVENTS_DIR": str(demo / "data"),
            "CLM_EXPLORATION": "false",
        }
    )
    from fastapi.testclient import TestClient

    from clm.config import load_config
    from serving.app import create_app
    from serving.review import build_overview

    config = load_config()
    app = create_app(config)
    with TestClient(app) as client:
        store, models = app.state.store, app.state.holder.current
        builds = []
        for _ in range(args.builds):
            started = time.perf_counter()
            overview = build_overview(models, store, config, str(demo / "data"))
            builds.append(time.perf_counter() - started)
        users = store.user_ids()[: args.users]
        score, review = {"X-API-Key": "s"}, {"X-API-Key": "r"}
        client.get("/review", headers=review)  # the app's own cached overview
        rows = []
        api = [_median_ms(lambda u=u: client.get(f"/v1/users/{u}/decision", headers=score), 3) for u in users]
        api_ms = statistics.median(ms for ms, _ in api)
        rows.append(("GET /v1/users/{id}/decision (JSON)", api_ms, statistics.median(s for _, s in api)))
        ms, size = _median_ms(lambda: client.get("/review", headers=review), 5)
        rows.append(("GET /review (overview cached)", ms, size))
        # the waterfalls are cached per (model version, row): a first view draws them, a repeat view does not.
        # Half the users have their page opened; the replays are of the other half's decisions, so that
        # their first view draws too.
        viewed, replayed = users[: len(users) // 2], users[len(users) // 2 :]
        for label, repeat in (("first view", 1), ("repeat view", 3)):
            pages = [
                _median_ms(lambda u=u: client.get(f"/review/users/{u}", headers=review), repeat)
                for u in viewed
            ]
            rows.append((f"GET /review/users/{{id}} ({label})", statistics.median(m for m, _ in pages), statistics.median(s for _, s in pages)))  # fmt: skip
        app.state.decision_log.flush()
        ids = [
            d["decision_id"] for u in replayed for d in app.state.decision_log.decisions_for_user(u, limit=1)
        ]
        for label, repeat in (("first view", 1), ("repeat view", 3)):
            replays = [
                _median_ms(lambda i=i: client.get(f"/review/decisions/{i}", headers=review), repeat)
                for i in ids
            ]
            rows.append((f"GET /review/decisions/{{id}} (replay, {label})", statistics.median(m for m, _ in replays), statistics.median(s for _, s in replays)))  # fmt: skip

    print(f"overview build over {len(overview.snapshot):,} users × {len(overview.cutoffs)} cutoffs: "
          f"median {statistics.median(builds):.2f} s of {args.builds} (min {min(builds):.2f}, max {max(builds):.2f})")  # fmt: skip
    print(f"{'request':42s} {'median ms':>10s} {'÷ JSON':>8s} {'KiB':>8s}")
    for name, ms, size in rows:
        print(f"{name:42s} {ms:10.1f} {ms / api_ms:8.1f} {size / 1024:8.0f}")
    (demo / "bench-decisions.db").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
