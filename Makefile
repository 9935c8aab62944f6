# sparc-ray developer commands. Every target installs what it needs into .venv.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL_TYPE ?= random_forest
export RAY_USAGE_STATS_ENABLED := 0
# Ray 2.60 token authentication: ~/.ray/auth_token (created by `ray get-auth-token --generate`)
# is read by `ray start`, `ray job submit`, `serve deploy` and drivers.
export RAY_AUTH_MODE := token
# Serve's fast path (HAProxy ingress, throughput-optimized replicas): serve.env, exported to
# `ray start` so every Serve process sees it.
include serve.env
export $(shell sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' serve.env)
DEMO := .demo
DASHBOARD := http://127.0.0.1:8265

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
	$(BIN)/bandit -r sparc_ray jobs -q  # every finding fails; justified exceptions: # nosec

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Full suite: lint, unit, model, integration and slow end-to-end tests.
test: venv lint
	bash .ci/install-apt.sh promtool prometheus
	bash .ci/install-apt.sh chromium chromium
	$(BIN)/python -m pytest -q -ra --durations=15

test-unit: venv
	$(BIN)/python -m pytest -q tests/unit -m 'not slow'

test-model: venv
	$(BIN)/python -m pytest -q tests/model -k "$(MODEL_TYPE)"

test-manifests: venv
	bash .ci/install-apt.sh promtool prometheus
	$(BIN)/python -m pytest -q tests/unit/test_manifests.py

## Train on the bundled dataset with a local Ray, serve it, send sample requests.
demo: venv
	mkdir -p $(DEMO)
	test -s $(DEMO)/admin_token || (umask 077; $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(32))" > $(DEMO)/admin_token)
	chmod 600 $(DEMO)/admin_token
	@echo "== 1/4 local Ray head (dashboard $(DASHBOARD))"
	$(BIN)/ray get-auth-token --generate >/dev/null
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ray status >/dev/null 2>&1 || \
	  PATH="$(CURDIR)/$(BIN):$$PATH" SPARC_ADMIN_TOKEN="$$(cat $(DEMO)/admin_token)" \
	  $(BIN)/ray start --head --num-cpus=2 --dashboard-host=127.0.0.1 --disable-usage-stats
	@echo "== 2/4 training job (Ray Tune search, gates, registry in ./model_store)"
	$(BIN)/ray job submit --address $(DASHBOARD) --working-dir . -- \
	  python jobs/train.py --config tune/default.yaml \
	  --store "$(CURDIR)/model_store" --storage-path "$(CURDIR)/ray_results"
	@echo "== 3/4 deploy serve_config.yaml"
	$(BIN)/serve deploy serve_config.yaml --address $(DASHBOARD)
	@echo "== 4/4 sample requests"
	$(BIN)/python -m sparc_ray.demo --dashboard $(DASHBOARD)
	@echo "admin token for /reload-model and /feedback (mode 0600): $(CURDIR)/$(DEMO)/admin_token"

## Stop what `make demo` started.
stop:
	-$(BIN)/serve shutdown -y --address $(DASHBOARD)
	-$(BIN)/ray stop
	-$(BIN)/python -m sparc_ray.serving.fastpath stop

## Benchmarks (about 10 minutes); installs Debian's wrk for the load.
bench: venv
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python bench/tune_bench.py --space broad
	$(BIN)/python bench/tune_bench.py --space narrow
	$(BIN)/python bench/serve_bench.py
	$(BIN)/python bench/release_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache ray_results .demo
