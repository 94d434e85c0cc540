"""WorkerSync without models or processes: two workers' views of one run directory (a fake pid for the second),
an admin reload on one reaching the other, what each serves listed, dead workers' files dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field

from serving.state import ModelHolder
from serving.workers import WORKERS_DIR, WorkerSync


@dataclass
class FakeSet:
    versions: dict[str, str]
    loaded_at: float = 1_700_000_000.0
    registry: dict = field(default_factory=dict)

    def version_labels(self) -> dict[str, str]:
        return {"policy": f"clm-policy/{self.versions['clm-policy']}"}


class Registry:
    """What the aliases point at now; `load` builds a fake set of those versions."""

    def __init__(self) -> None:
        self.policy = "1"
        self.loads = 0

    def versions(self, alias: str) -> dict[str, str]:
        return {"clm-policy": self.policy}

    def load(self, alias: str) -> FakeSet:
        self.loads += 1
        return FakeSet(self.versions(alias))


def worker(run_dir, registry: Registry, pid: int | None = None) -> WorkerSync:
    holder = ModelHolder(registry.load, registry.versions, alias="champion")
    holder.reload()
    sync = WorkerSync(run_dir, holder, poll_seconds=3600)  # the test calls follow() itself
    if pid is not None:
        sync.pid = pid
    sync.start()
    return sync


def a_live_pid() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_an_admin_reload_on_one_worker_reaches_the_other(tmp_path) -> None:
    registry = Registry()
    other_process = a_live_pid()
    try:
        first, second = worker(tmp_path, registry), worker(tmp_path, registry, pid=other_process.pid)
        try:
            assert second.follow() is False  # nothing bumped yet: no reload
            registry.policy = "2"
            first.holder.reload()  # what POST /v1/admin/reload does, then it bumps
            assert first.bump() == 1
            assert second.holder.current.versions == {"clm-policy": "1"}
            assert second.follow() is True
            assert second.holder.current.versions == {"clm-policy": "2"}
            assert first.follow() is False  # its own bump is not followed again
            second.publish()
            listed = {w["pid"]: w["versions"]["policy"] for w in first.workers()}
            assert listed == {first.pid: "clm-policy/2", other_process.pid: "clm-policy/2"}
            assert (
                json.loads((tmp_path / WORKERS_DIR / f"{other_process.pid}.json").read_text())[
                    "reload_generation"
                ]
                == 1
            )
        finally:
            first.stop()
            second.stop()
    finally:
        other_process.kill()
        other_process.wait()


def test_a_dead_workers_state_is_dropped(tmp_path) -> None:
    registry = Registry()
    gone = a_live_pid()
    gone.kill()
    gone.wait()
    alive = worker(tmp_path, registry)
    try:
        dead = WorkerSync(tmp_path, alive.holder)
        dead.pid = gone.pid
        dead.publish()
        assert (tmp_path / WORKERS_DIR / f"{gone.pid}.json").exists()
        assert [w["pid"] for w in alive.workers()] == [alive.pid]
        assert not (tmp_path / WORKERS_DIR / f"{gone.pid}.json").exists()
    finally:
        alive.stop()


def test_without_a_run_directory_a_worker_is_alone(tmp_path) -> None:
    registry = Registry()
    alone = worker(None, registry)
    assert alone.bump() == 0 and alone.follow() is False
    assert [w["versions"] for w in alone.workers()] == [{"policy": "clm-policy/1"}]
    alone.stop()
