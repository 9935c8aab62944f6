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

.PHONY: venv lint audit format test test-unit test-model test-manifests demo stop bench clean

PIP_VERSION := 26.3

## The locked versions, each checked against its sha256 (requirements-dev.lock, from .ci/lock.py).
venv: $(STAMP)
$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q 'pip==$(PIP_VERSION)'
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install -q --no-deps -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy  # [tool.mypy] in pyproject.toml: the whole package
	$(BIN)/bandit -r sparc_ray jobs -q  # every finding fails; justified exceptions: # nosec

## Known vulnerabilities in the locked versions. Needs PyPI's per-version JSON API (or OSV):
## not reachable from this project's CI machine, so .ci/run does not call it.
audit: venv
	$(BIN)/pip-audit --strict --require-hashes --disable-pip --progress-spinner off \
	  -r requirements.lock -r requirements-dev.lock

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Full suite (what CI runs, .ci/run): lint, then every test, those that start Ray
## clusters (marked `cluster`) included; about 27 minutes on 2 CPUs.
test: venv lint
	bash .ci/install-apt.sh promtool prometheus
	bash .ci/install-apt.sh chromium chromium
	bash .ci/install-apt.sh redis-server redis-server
	$(BIN)/python -m pytest -q -ra --durations=15

## Not only unit tests: every test that starts no Ray (-m 'not cluster': unit, model,
## manifest and security tests, and the parts of tests/integration that need no cluster),
## about 1 minute. A test that starts Ray without the `cluster` marker fails
## (tests/conftest.py), so this selection stays true.
test-unit: venv
	$(BIN)/python -m pytest -q -m 'not cluster'

## The model tests of one family: make test-model MODEL_TYPE=logistic_regression
test-model: venv
	$(BIN)/python -m pytest -q tests/model -k "$(MODEL_TYPE)"

## The KubeRay manifests, alert rules and dashboard (tests/manifests/), promtool installed.
test-manifests: venv
	bash .ci/install-apt.sh promtool prometheus
	$(BIN)/python -m pytest -q tests/manifests

## Train on the bundled dataset with a local Ray, serve it, send sample requests.
demo: venv
	mkdir -p $(DEMO)
	@# Bearer tokens (the app refuses any shorter than 32 characters): created or renewed.
	for t in admin_token feedback_token; do \
	  { test -s $(DEMO)/$$t && [ "$$(tr -d '\n' < $(DEMO)/$$t | wc -c)" -ge 32 ]; } || (umask 077; $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(32))" > $(DEMO)/$$t); \
	  chmod 600 $(DEMO)/$$t; \
	done
	@# Ed25519 key pair: training signs with keys/model_signing.key, serving checks the .pub.
	test -s keys/model_signing.key || $(BIN)/sparc-ray keys generate --out keys/model_signing
	@echo "== 1/5 local Ray head (dashboard $(DASHBOARD))"
	$(BIN)/ray get-auth-token --generate >/dev/null
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ray status >/dev/null 2>&1 || \
	  PATH="$(CURDIR)/$(BIN):$$PATH" SPARC_ADMIN_TOKEN="$$(cat $(DEMO)/admin_token)" \
	  SPARC_FEEDBACK_TOKEN="$$(cat $(DEMO)/feedback_token)" \
	  $(BIN)/ray start --head --num-cpus=2 --dashboard-host=127.0.0.1 --disable-usage-stats
	@echo "== 2/5 training job (Ray Tune search, gates, registry in ./model_store)"
	$(BIN)/ray job submit --address $(DASHBOARD) --working-dir . -- \
	  python jobs/train.py --config tune/default.yaml \
	  --store "$(CURDIR)/model_store" --storage-path "$(CURDIR)/ray_results" \
	  --signing-key "$(CURDIR)/keys/model_signing.key"
	@echo "== 3/5 deploy serve_config.yaml, with the traffic capture on ($(DEMO)/serve_config.yaml)"
	$(BIN)/python -m sparc_ray.demo --write-config $(DEMO)/serve_config.yaml
	$(BIN)/serve deploy $(DEMO)/serve_config.yaml --address $(DASHBOARD)
	@echo "== 4/5 sample requests, drift report of what was captured"
	$(BIN)/python -m sparc_ray.demo --dashboard $(DASHBOARD)
	@echo "== 5/5 batch scoring job (Ray Data): the bundled dataset -> $(DEMO)/scores-*/"
	$(BIN)/ray job submit --address $(DASHBOARD) --working-dir . -- \
	  python jobs/score.py --data builtin:breast_cancer --name breast_cancer \
	  --store "$(CURDIR)/model_store" --public-key "$(CURDIR)/keys/model_signing.pub" \
	  --out "$(CURDIR)/$(DEMO)/scores-$$(date -u +%Y%m%dT%H%M%S)"
	@echo "tokens (mode 0600): /reload-model $(CURDIR)/$(DEMO)/admin_token, /feedback $(CURDIR)/$(DEMO)/feedback_token"

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
	$(BIN)/python bench/capture_bench.py
	$(BIN)/python bench/score_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache ray_results .demo  # keeps keys/ (signing key)
