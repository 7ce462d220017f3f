# workqueue-job developer commands. `make test` is what CI runs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS := $(CURDIR)/.tools
export PATH := $(TOOLS)/bin:$(CURDIR)/.venv/bin:$(PATH)
PYTHON := .venv/bin/python
PYTEST := .venv/bin/pytest
HELM3 := $(TOOLS)/helm3/helm
CHART := charts/workqueue-job

PYTEST_WORKERS ?= 3
CHECK_WORKERS ?= 4
# Test processes, each with its own broker servers (tests/conftest.py); tests that start dockerd
# or build the image take turns (tests/docker_engine.py docker_lock). Two kept both cores busy
# while every worker pod was a new interpreter; with pods forked from a preloaded server
# (tests/pod_processes.py) two left the cores 40-60% idle for a third of the run, waiting on
# leases, restarts and timeouts, and three took pytest from 30.8 to 21 minutes (docs/testing.md).
# Four failed tests whose bounds held at two, on a slow day. worksteal: a process that runs out
# of tests takes some of another's, so the run does not end on one process's queue.

.PHONY: help setup lint check test test-unit demo images e2e bench changes readme package publish clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: ## Install .venv, helm 3 + 4, kubectl and the broker servers (idempotent)
	@# Quiet when another target needs it and nothing changed; `make setup` says what it found.
	@SETUP_QUIET=$(if $(filter setup,$(MAKECMDGOALS)),,1) bash scripts/setup.sh

lint: setup ## ruff, and helm lint --strict with helm 4 and helm 3
	.venv/bin/ruff check .
	@if [ -f $(CHART)/Chart.yaml ]; then \
	  helm lint --strict $(CHART) && $(HELM3) lint --strict $(CHART); \
	else echo "lint: no chart yet; skipping helm lint"; fi

check: setup lint ## The inner loop while editing: lint, unit and chart tests but the slow ones (under 2 min)
	$(PYTEST) -q -n $(CHECK_WORKERS) --dist worksteal -m "not slow" tests/unit tests/chart tests/release

test: setup lint ## Lint, then every test that runs here (not e2e), in parallel processes
	$(PYTEST) -q -n $(PYTEST_WORKERS) --dist worksteal --durations=40 --durations-min=10 tests --ignore=tests/e2e

test-unit: setup ## Only the fast tests (no broker servers)
	$(PYTEST) -q tests/unit

demo: setup ## Run a sample job locally: private Redis, the real seeder, 4 worker processes
	$(PYTHON) -m workqueue run-local --tasks examples/tasks.txt --parallelism 4 --metrics -- \
	  sh -c 'echo "Working on $$WORKQUEUE_PAYLOAD"; sleep 0.5'

images: setup ## Build the runtime image workqueue-job:<appVersion> (BASE_IMAGE=... to change its base)
	@BASE_IMAGE='$(BASE_IMAGE)' bash scripts/build-image.sh

e2e: setup ## Deploy to kind (or the cluster in KUBECONFIG) and run every broker x mode
	@# No cluster and no way to make one: one line that says why, and not a failure.
	@why=$$(cd tests && ../$(PYTHON) -c 'import os; from docker_engine import ensure_engine; \
	  from e2e_support import missing_tools; print(missing_tools(os.environ, ensure_engine()) or "")'); \
	  if [ -n "$$why" ]; then echo "e2e: skipped: $$why"; exit 0; fi; \
	  $(PYTEST) -s -q -rs tests/e2e

bench: setup ## Throughput, seeding, generator and memory vs the docs' protocols (~23 min)
	$(PYTHON) -m bench --write docs/benchmarks.md

VERSION := $(shell sed -n 's/^version: *//p' $(CHART)/Chart.yaml)
DIST ?= dist

changes: ## Copy CHANGELOG.md's entry for the chart's version into Chart.yaml (artifacthub.io/changes)
	$(PYTHON) scripts/chart_changes.py

readme: ## Regenerate the chart README's table of values from values.yaml's comments
	$(PYTHON) scripts/values_table.py

package: setup ## Write the chart (linted), a wheel and an sdist to dist/ (DIST=... elsewhere)
	@$(PYTHON) scripts/chart_changes.py --check && $(PYTHON) scripts/values_table.py --check
	helm lint --strict $(CHART) >/dev/null && $(HELM3) lint --strict $(CHART) >/dev/null
	@mkdir -p $(DIST)
	helm package $(CHART) --destination $(DIST)
	@# The wheel is built from the sdist, as pip would: what the sdist lacks, the wheel lacks.
	$(PYTHON) -m build --outdir $(DIST) . > $(DIST)/build.log 2>&1 || { tail -20 $(DIST)/build.log; exit 1; }
	@ls -1 $(DIST)/workqueue-job-$(VERSION).tgz $(DIST)/workqueue_job-$(VERSION)*

publish: ## Push dist/'s chart to oci://REGISTRY/charts and the image to REGISTRY (PLAIN_HTTP=1 for http; IMAGE=0: chart only)
	@REGISTRY='$(REGISTRY)' PLAIN_HTTP='$(PLAIN_HTTP)' IMAGE='$(IMAGE)' VERSION='$(VERSION)' 	  bash scripts/publish.sh

clean: ## Remove .venv, .tools and caches
	rm -rf .venv .tools .pytest_cache .ruff_cache .hypothesis dist
