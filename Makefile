# ferflow: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRA ?= cpu
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all test-realdata lint format dvc-yaml bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml uv.lock
	python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "uv>=0.5"
	python3 -m uv sync --quiet --frozen --extra $(EXTRA) --extra dev
	touch $(STAMP)

install: $(STAMP) ## create .venv from uv.lock (EXTRA=jax-gpu for GPU workers, run with KERAS_BACKEND=jax)

demo: $(STAMP) ## the main job on synthetic faces, offline, a few minutes on a laptop CPU
	$(PY) -m flows.demo

test: $(STAMP) ## the default test suite (real-data tests run when FERFLOW_FER2013_ZIP is set)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-all: $(STAMP) ## every test, slow ones included
	$(VENV)/bin/pytest -m "" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check), mypy on the core, the import-linter layer contracts
	$(VENV)/bin/ruff check src flows tasks tests bench scripts
	$(VENV)/bin/ruff format --check src flows tasks tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

dvc-yaml: $(STAMP) ## rewrite dvc.yaml from the stage table (src/ferflow/stages/spec.py)
	$(VENV)/bin/python -m ferflow.stages.dvcfile > dvc.yaml.new && mv dvc.yaml.new dvc.yaml

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src flows tasks tests bench scripts
	$(VENV)/bin/ruff format src flows tasks tests bench scripts

bench: $(STAMP) ## benchmarks (need FERFLOW_FER2013_ZIP for the real-data ones)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean: ## remove generated data, models, reports and local stores (not the venv)
	rm -rf data/prepared models reports mlflow/mlflow.db mlflow/artifacts mlruns mlartifacts demo
