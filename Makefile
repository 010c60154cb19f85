# reelay: the two commands are `make demo` and `make test`; each sets everything up first.
# Everything installs into the repo (.venv, .venv-sam, node_modules) from pinned versions.

SHELL := /bin/bash
# The Lambda runtime is python3.13: prefer it (pyenv has one on these machines), else python3.
# (A pyenv shim may exist without working, so ask the interpreter for its real path.)
PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null) $(shell command -v python3))
VENV := .venv
BIN := $(VENV)/bin
SAM := .venv-sam/bin/sam
REGION := us-east-1

.PHONY: setup chromium ui demo test dev checks lint template-checks unit integration bench bench-authorizer build clean chaos cost webhooks governor-bench bench-batch poll-cost

setup: $(VENV)/.installed .venv-sam/.installed node_modules/.installed chromium

# The web page's browser test (tests/e2e/test_web_ui.py) drives Debian's chromium headless.
# Installed once when missing, as root (CI) or through sudo; without it that test is skipped.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium missing and no root: the browser test will be skipped"; fi; }

$(VENV)/.installed: requirements-dev.txt requirements-codegen.txt layers/core/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements-codegen.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# The SAM CLI pins its own boto3 and pydantic, so it lives in a virtualenv of its own.
.venv-sam/.installed: requirements-sam.txt
	test -x .venv-sam/bin/python || $(PYTHON) -m venv .venv-sam
	.venv-sam/bin/pip install -q --disable-pip-version-check -r requirements-sam.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

## demo: one task through each provider into S3 on the embedded local stack
demo: $(VENV)/.installed
	$(BIN)/reelay demo

## dev: the local stack, kept running (API on 127.0.0.1:8787)
dev: $(VENV)/.installed
	$(BIN)/reelay dev --port 8787

## ui: the web page on 127.0.0.1:8790 against REELAY_API_URL (default: a local `make dev`)
ui: $(VENV)/.installed
	$(BIN)/reelay ui

## test: every template check, lint, unit and integration tests
test: setup template-checks lint
	$(BIN)/pytest -q -p no:cacheprovider -n 4 --dist loadfile

template-checks: setup
	SAM_CLI_TELEMETRY=0 $(SAM) validate --region $(REGION) -t template.yaml
	SAM_CLI_TELEMETRY=0 $(SAM) validate --lint --region $(REGION) -t template.yaml
	$(BIN)/cfn-lint -a cfn_lint_serverless.rules -- template.yaml
	node_modules/.bin/asl-validator --json-path statemachine/poll.asl.json

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check layers functions
	$(BIN)/mypy layers/core/reelay devstack

unit: $(VENV)/.installed
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

integration: $(VENV)/.installed
	$(BIN)/pytest -q -p no:cacheprovider tests/integration tests/e2e

## bench: the figures quoted in README (cold start, poll schedule, ingest throughput and memory; ~5 min)
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/cold_start.py
	$(BIN)/python benchmarks/poll_schedule.py
	$(BIN)/python benchmarks/ingest_throughput.py --mib 10 100 1024 --reps 5 5 2

## bench-batch: a 10,000-line manifest on the local stack: when it is accepted, each chunk's function time
## (not part of `make bench`: tens of minutes on a loaded 2-core box; add BATCH_ARGS="--lines 1000" to shorten)
bench-batch: $(VENV)/.installed
	$(BIN)/python benchmarks/batch_manifest.py --lines 10000 --no-report $(BATCH_ARGS)

## bench-authorizer: the API key authorizer's p50 cached/uncached on the local stack, and its cost per 1,000 (~1 min)
bench-authorizer: $(VENV)/.installed
	$(BIN)/python benchmarks/authorizer.py $(BENCH_ARGS)

## poll-cost: a 3- and a 10-minute poll-path task counted on the local stack and priced (~12 min)
poll-cost: $(VENV)/.installed
	$(BIN)/python benchmarks/poll_cost.py

## chaos: 100 tasks on the local stack, 30 % with injected faults; exits 1 when a target is missed
## (not part of `make test`; e.g. `make chaos CHAOS_ARGS="--runs 3"`)
chaos: $(VENV)/.installed
	$(BIN)/python benchmarks/chaos.py $(CHAOS_ARGS)

## cost: $ per 1,000 tasks per path (callback, poll 3-min, poll 10-min), 100 tasks each on the local stack,
## reelay's own counts checked against an independent count; exits 1 on a mismatch (e.g. COST_ARGS="--tasks 20")
cost: $(VENV)/.installed
	$(BIN)/python benchmarks/cost.py $(COST_ARGS)

## webhooks: 100 tasks on the local stack, their webhooks verified by the standardwebhooks library
## across receiver failures and a secret rotation, and their events counted; exits 1 when a target is missed
webhooks: $(VENV)/.installed
	$(BIN)/python benchmarks/webhooks.py $(WEBHOOKS_ARGS)

## governor-bench: 200 generate_task tasks at the seed's limits (10 s each, 10 at once, 60 a minute),
## with 1 and with 10 submit workers; makespan vs the minimum, 429s, most in flight, duplicates (~15 min)
## (e.g. `make governor-bench GOVERNOR_ARGS="--tasks 0 --fairness 1000 --workers 10"` for the fairness wait)
governor-bench: $(VENV)/.installed
	$(BIN)/python benchmarks/governor.py $(GOVERNOR_ARGS)

## build: sam build (needs python3.13 on PATH and the package registry)
build: setup
	PATH="$(dir $(PYTHON)):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM) build --region $(REGION)

clean:
	rm -rf $(VENV) .venv-sam node_modules .aws-sam
