"""Execute the notebooks with nbclient, in order, each in a fresh kernel running this interpreter.

    .venv/bin/python notebooks/execute.py                     # all four, in place (after `make demo`)
    .venv/bin/python notebooks/execute.py 03-review-explanations.ipynb --out /tmp/executed

The notebooks take their parameters from environment variables (listed in each notebook's first code
cell): `CLM_NOTEBOOK_DATA`, `MLFLOW_TRACKING_URI`, `CLM_NOTEBOOK_MLFLOW`, `CLM_NOTEBOOK_ALIAS`. A notebook
is written only when every cell ran; the first failing cell stops the run with its traceback.
The tests call `execute_notebook` on copies of the notebooks, so both run the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = (
    "01-explore-events.ipynb",
    "02-train-and-compare.ipynb",
    "03-review-explanations.ipynb",
    "04-evaluate-policy.ipynb",
)
KERNEL_NAME = "python3"
CELL_TIMEOUT_SECONDS = 600
# jupyter_client runs a kernel spec whose command is a bare `python` with the interpreter that starts it
_BARE_PYTHON = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


def check_kernel_spec(kernel_name: str = KERNEL_NAME) -> None:
    """Refuse a kernel spec that would run another interpreter than this one (e.g. a user-level
    `python3` spec pointing at a system Python without the project's packages)."""
    spec = KernelSpecManager().get_kernel_spec(kernel_name)
    command = spec.argv[0]
    if command in _BARE_PYTHON:
        return
    if Path(command).resolve() != Path(sys.executable).resolve():
        raise RuntimeError(
            f"kernel spec {kernel_name!r} ({spec.resource_dir}) runs {command}, not {sys.executable}"
        )


def execute_notebook(
    source: Path,
    target: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    timeout: int = CELL_TIMEOUT_SECONDS,
) -> nbformat.NotebookNode:
    """Run every cell of `source` in a new kernel started in the notebook's folder, with this process's
    environment plus `env`, and write the executed notebook to `target` (default: `source`, in place).

    Raises `nbclient.exceptions.CellExecutionError` (the failing cell's source and traceback) on the
    first cell error; nothing is written then."""
    check_kernel_spec()
    source = Path(source)
    notebook = nbformat.read(source, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(source.parent)}},
    )
    client.execute(env={**os.environ, **(env or {})})
    nbformat.write(notebook, target or source)
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="*", help="notebook file names (default: all four, in order)")
    parser.add_argument("--out", type=Path, help="write the executed notebooks here instead of in place")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_SECONDS, help="seconds per cell")
    args = parser.parse_args(argv)
    names = args.notebooks or list(NOTEBOOKS)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = HERE / Path(name).name
        target = None if args.out is None else args.out / source.name
        started = time.perf_counter()
        execute_notebook(source, target, timeout=args.timeout)
        print(f"{source.name}: executed in {time.perf_counter() - started:.0f} s -> {target or source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
