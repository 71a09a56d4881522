# One-command life cycle. Every recipe runs in bash with infra/env.sh sourced (BASH_ENV), so all
# state stays in .state/ inside the repo and telemetry is off.
SHELL := /bin/bash
export BASH_ENV := $(CURDIR)/infra/env.sh
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
MODEL ?=  # default: the version in production, else staging, else the latest (imgclf serve says which)
CONFIG ?= configs/training.yaml
# The stack pipelines run on: the team's when ZENML_STACK names one (CI), else the local one (re)activated,
# so a `zenml stack set` elsewhere cannot break a run
USE_STACK = if [ -n "$${ZENML_STACK:-}" ]; then $(BIN)/zenml stack set "$$ZENML_STACK"; else $(BIN)/python infra/local_stack.py; fi
PORT ?= 3000
MONITOR_CONFIG ?= configs/monitoring.yaml
BATCH_CONFIG ?= configs/batch_inference.yaml
# pip on this machine warns once per package about missing local index folders; keep the real errors
PIP_QUIET := { grep -v "is ignored: it is neither a file nor a directory" || true; }
.SHELLFLAGS := -o pipefail -c

.PHONY: setup run train summary stages monitor team-up team-down team-status batch-inference promote-production rollback-production rollback-staging test test-fast lint format serve data clean-state
.DEFAULT_GOAL := run

setup: $(VENV)/.installed .zen .state/.stack-ready

$(VENV)/.installed: requirements.txt requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24" 2>&1 | $(PIP_QUIET)
	$(BIN)/pip install -q -r requirements.txt -c requirements.lock 2>&1 | $(PIP_QUIET)
	PYTHONWARNINGS=ignore $(BIN)/pip install -q --no-deps -e . 2>&1 | $(PIP_QUIET)  # no editable-install banner
	grep -q "infra/env.sh" $(VENV)/bin/activate || echo 'source "$(CURDIR)/infra/env.sh"' >> $(VENV)/bin/activate
	touch $@

.zen: $(VENV)/.installed
	$(BIN)/zenml init >/dev/null  # its banner; errors still reach stderr

.state/.stack-ready: $(VENV)/.installed .zen infra/local_stack.py
	$(BIN)/python infra/local_stack.py
	touch $@

data: setup
	$(BIN)/dvc repro digits

run: setup data train
	$(BIN)/python -m imgclf.cli summary --model-name image-classifier

# The training pipeline on the team's stack when ZENML_STACK names one (CI), else on the local stack.
# It ends by giving the new version `staging` when the promotion rules allow, and serving it.
train: setup
	$(USE_STACK)
	$(BIN)/zenml pipeline run pipelines.training_pipeline -c $(CONFIG)

summary: setup  # Markdown: the latest version's figures, its promotion decision, the stages (CI job summary)
	$(BIN)/imgclf summary --markdown

stages: setup
	$(BIN)/imgclf stages

# Production takes only the version that holds staging, named explicitly; exits non-zero when refused.
promote-production: setup
	@test -n "$(VERSION)" || { echo "usage: make promote-production VERSION=N  (the version that holds staging: imgclf stages)"; exit 2; }
	$(USE_STACK)
	$(BIN)/python -m pipelines.promotion --version "$(VERSION)" -c configs/promote_production.yaml

# The loop on the stack (the team's when ZENML_STACK names one): the production version's traffic against
# its reference profile; on drift, the training pipeline (the new version takes staging only by the rules).
monitor: setup
	$(USE_STACK)
	$(BIN)/python -m pipelines.monitoring -c $(MONITOR_CONFIG) --retrain-config $(CONFIG) $(MONITOR_ARGS)

# Every image of INPUT (a folder, a .csv/.txt manifest, a .zip/.tar archive or a bucket prefix) classified by the
# production version in SHARDS parallel steps (README: Batch inference); BATCH_ARGS: e.g. --shards 8.
batch-inference: setup
	@test -n "$(INPUT)" || { echo "usage: make batch-inference INPUT=path/to/images  (folder, manifest, archive or s3://...)"; exit 2; }
	$(USE_STACK)
	$(BIN)/python -m pipelines.batch_inference -c $(BATCH_CONFIG) --input "$(INPUT)" $(BATCH_ARGS)

team-up: setup  # PostgreSQL, an MLflow server and a ZenML server on this machine, and the stack imgclf-team
	$(BIN)/python infra/team_stack.py up

team-down: setup  # stop them; the data stays under .state/team
	$(BIN)/python infra/team_stack.py down

team-status: setup
	$(BIN)/python infra/team_stack.py status

rollback-production: setup
	$(BIN)/imgclf rollback production

rollback-staging: setup
	$(BIN)/imgclf rollback staging

test: setup
	$(BIN)/pytest

test-fast: setup  # the unit subset: no whole pipeline runs, no servers, no extra training or export processes
	$(BIN)/pytest -m "not integration and not service and not slow"

lint: $(VENV)/.installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/python infra/k8s_check.py  # the Kustomize overlays, rendered by kubectl, against the schemas of Kubernetes 1.33 and 1.37
	$(BIN)/actionlint .github/workflows/*.y*ml  # also shellchecks their run: blocks when shellcheck is on PATH

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

serve: setup
	$(BIN)/imgclf serve $(if $(strip $(MODEL)),--model $(MODEL)) --host 127.0.0.1 --port $(PORT)

clean-state:
	rm -rf .state .zen
