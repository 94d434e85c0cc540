# The two commands a new user needs: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
TOOLS := $(CURDIR)/.tools
UV_VERSION := 0.13.8
# Use uv from PATH when present, otherwise bootstrap a pinned copy from PyPI into .tools/.
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV := $(CURDIR)/.venv
STAMP := $(VENV)/.synced
CLM := $(VENV)/bin/clm
DEMO_DIR ?= $(CURDIR)/data/demo
PYTEST_ARGS ?=
# pytest-xdist workers: the suite spends much of its time waiting on servers, browsers and kernels (how the
# work is shared between them: tests/conftest.py, `pytest_xdist_make_scheduler`)
TEST_WORKERS ?= 2
PORT ?= 8000

export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
# uv installs without bytecode and some machines set PYTHONDONTWRITEBYTECODE: then every process compiles
# mlflow, pandas, scikit-learn… from source again (7–10 s of CPU each: each test worker, server, kernel and CLI
# call). Setup compiles the locked packages once; the project's commands write bytecode for its own modules.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: help setup demo review test bench lint clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(TOOLS)/bin/uv:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(TOOLS) uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(if $(findstring $(TOOLS),$(UV)),$(TOOLS)/bin/uv)
	$(UV) sync --frozen --extra dev --compile-bytecode --python $(PYTHON)
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv from the lock file (idempotent); Java 17 for the Spark engine when missing
	@bash scripts/ensure-java.sh

demo: setup  ## simulate a small world and run the pipeline end to end
	$(CLM) demo --out $(DEMO_DIR)

review: setup  ## serve the demo's decisions and reviewer pages on 127.0.0.1:$(PORT) (after `make demo`)
	@test -f $(DEMO_DIR)/serve.env || { echo "run make demo first"; exit 1; }
	set -a && . $(DEMO_DIR)/serve.env && set +a && $(CLM) serve --host 127.0.0.1 --port $(PORT)

test: setup  ## run the test suite (heavy runs are behind the `slow` marker)
	@bash scripts/ensure-services.sh
	@bash scripts/ensure-browser.sh
	@bash scripts/ensure-java.sh
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: setup  ## run the benchmarks; each prints its figures (about 35 minutes on 2 cores)
	$(VENV)/bin/python benchmarks/simulate.py
	$(VENV)/bin/python benchmarks/features.py
	$(VENV)/bin/python benchmarks/online_store.py
	$(VENV)/bin/python benchmarks/train.py
	$(VENV)/bin/python benchmarks/policy.py
	$(VENV)/bin/python benchmarks/serve.py

lint: setup  ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:  ## remove the virtualenv, tools and generated data
	rm -rf $(VENV) $(TOOLS) data .pytest_cache .ruff_cache
