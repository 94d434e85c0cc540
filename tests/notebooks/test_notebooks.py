"""The notebooks run top to bottom on a small simulated world — the session's trained `served_world` — with
the same `execute_notebook` humans use (notebooks/execute.py), on copies in a temporary directory. Any cell
error fails the test with that cell's source and traceback. The notebooks only read the world's registry;
notebook 02 trains into its own store."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from mlflow import MlflowClient
from nbclient.exceptions import CellExecutionError

from clm.commands.demo import DEMO_OUT
from tests.conftest import ServedWorld, new_store
from training import tracking

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _load_executor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notebook_execute", NOTEBOOK_DIR / "execute.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


executor = _load_executor()


def run(source: Path, tmp_path: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """Execute a copy of `source` in `tmp_path`; a cell error fails the test with the cell and traceback."""
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    try:
        return executor.execute_notebook(copy, env=env)
    except CellExecutionError as exc:
        pytest.fail(f"{source.name}: a cell failed\n{ANSI_ESCAPE.sub('', str(exc))}", pytrace=False)


def registry_state(tracking_uri: str) -> dict[str, object]:
    """Runs, registered versions and aliases of a store: what a read-only notebook must leave alone."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {
        "runs": sorted(r.info.run_id for r in client.search_runs(experiments, max_results=10_000)),
        "models": {
            m.name: (
                sorted(int(v.version) for v in client.search_model_versions(f"name = '{m.name}'")),
                m.aliases,
            )
            for m in client.search_registered_models()
        },
    }


def test_every_notebook_is_executed() -> None:
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(executor.NOTEBOOKS)


def test_the_kernel_runs_this_interpreter_with_the_given_environment(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import os, sys\nprint(sys.prefix)\nprint(os.environ['CLM_PROBE'])")]
    )
    path = tmp_path / "probe.ipynb"
    nbformat.write(notebook, path)
    executed = executor.execute_notebook(path, env={"CLM_PROBE": "from the test"})
    assert executed.cells[0].outputs[0].text.splitlines() == [sys.prefix, "from the test"]


# 02 trains both models (about 1–2.5 min on 2 busy cores) and 04 evaluates the policy against the oracle
# (1–2 min): with them the four notebooks take 4–6 minutes, so those two carry the `slow` marker
HEAVY = {"02-train-and-compare.ipynb", "04-evaluate-policy.ipynb"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in executor.NOTEBOOKS]
)
def test_notebook_runs_without_errors(
    name: str, served_world: ServedWorld, migrated_store: Path, tmp_path: Path
) -> None:
    env = {
        "CLM_NOTEBOOK_DATA": str(served_world.data),
        "MLFLOW_TRACKING_URI": served_world.tracking_uri,
        "CLM_NOTEBOOK_MLFLOW": new_store(migrated_store, tmp_path / "notebook-mlflow"),
        "CLM_NOTEBOOK_ALIAS": "champion",
    }
    before = registry_state(served_world.tracking_uri)
    executed = run(NOTEBOOK_DIR / name, tmp_path, env)

    assert all(cell.get("execution_count") for cell in executed.cells if cell.cell_type == "code")
    assert registry_state(served_world.tracking_uri) == before, "a notebook changed the world's registry"
    if name.startswith("02-"):
        trained = registry_state(env["CLM_NOTEBOOK_MLFLOW"])["models"]
        assert set(trained) == {"clm-churn", "clm-upgrade"}


# what MLflow prints into a cell's output unless told otherwise (registration goes through the client, which
# prints nothing; log lines and download bars are silenced in each notebook's first cell)
MLFLOW_CHATTER = ("Successfully registered model", "Created version", "Downloading artifacts", "INFO mlflow",
                  "WARNING mlflow", "CloudPickle")  # fmt: skip


def printed(notebook: nbformat.NotebookNode) -> list[str]:
    """Every stream the notebook's cells wrote (stdout and stderr), cell by cell."""
    return [
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "stream"
    ]


@pytest.mark.parametrize("name", executor.NOTEBOOKS)
def test_the_committed_notebook_was_executed_on_the_demo_world(name: str) -> None:
    """The committed outputs are the demo's (`make demo`), so their figures match the report's; the first
    cell prints the data directory (and the registry) as seen from the notebooks' folder."""
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    assert all(cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code"), name
    first = printed(notebook)[0].splitlines()
    assert f"data: {Path('..') / DEMO_OUT / 'data'}" in first, first
    if name.startswith(("03-", "04-")):  # they read the registry `make demo` trained into
        assert f"registry: {Path('..') / tracking.STORE_DIR / tracking.DATABASE_FILE} @champion" in first, (
            first
        )
    for text in printed(notebook):
        for chatter in MLFLOW_CHATTER:
            assert chatter not in text, (name, chatter, text)
