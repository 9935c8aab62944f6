# sparc-ray developer commands. Every target installs what it needs into .venv.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL_TYPE ?= random_forest
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: venv lint format test test-unit test-model test-manifests demo stop bench clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Full suite: lint, unit, model, integration and slow end-to-end tests.
test: venv lint
	bash .ci/install-promtool.sh
	$(BIN)/python -m pytest -q -ra --durations=15

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit -m 'not slow'

test-model: venv
	SPARC_MODEL_TYPE=$(MODEL_TYPE) $(BIN)/python -m pytest -q tests/model

test-manifests: venv
	bash .ci/install-promtool.sh
	$(BIN)/python -m pytest -q tests/unit/test_manifests.py

bench: venv
	$(BIN)/python bench/tune_bench.py
	$(BIN)/python bench/serve_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache ray_results .demo
