# Two entry points for a fresh clone (see README.md):
#   make demo   set everything up, start the local control plane and run the demo
#   make test   set everything up and run every test tier
# Everything downloaded or built is cached under ~/.cache/yolofit, keyed by version,
# so a second run (or CI's fresh clone on the same machine) downloads and builds nothing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CACHE  ?= $(HOME)/.cache/yolofit
WHEELS := $(CACHE)/wheels
export YOLO_OFFLINE := 1

.PHONY: setup venv system-deps binaries test test-unit test-gpu lint demo bench manifests lock clean

setup: venv system-deps binaries

# The registry here answers without cache headers, so pip's own HTTP cache stays empty;
# a wheelhouse keyed by the lock file does the job instead (pip skips files it already has).
$(BIN)/.installed: requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo ">> wheels: $(WHEELS) (only missing files are downloaded)"
	$(BIN)/pip download -q --no-deps -d $(WHEELS) -r requirements.lock
	$(BIN)/pip install -q --no-index --find-links $(WHEELS) -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	@touch $@

venv: $(BIN)/.installed

# Debian's prometheus (server + promtool) for the monitoring tests; started by the tests, never as a service.
system-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo ">> installing Debian's prometheus"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# Go-built binaries: kube-apiserver, kube-scheduler, kube-controller-manager, etcd, kwok, helm.
binaries: venv
	$(BIN)/yolofit sandbox build --with-kueue
	bash scripts/build-helm.sh

lint: venv
	$(BIN)/ruff check yolofit tests benchmarks charts
	$(BIN)/lint-imports

test: setup lint
	$(BIN)/pytest -p no:cacheprovider

# The fast tier: no control plane, no real training, no Go build (those are integration/slow).
test-unit: venv
	$(BIN)/pytest -p no:cacheprovider -m "not integration and not slow and not gpu"

# The GPU tier, for a machine with CUDA: the trainer's CUDA memory tracking, the allocator model
# against the real caching allocator (expandable segments on and off), bf16/fp16 AMP and one
# real training run against its estimate. A few minutes; elsewhere every test is skipped with
# the reason. Needs only the venv.
test-gpu: venv
	$(BIN)/pytest -p no:cacheprovider -m gpu -rs tests/gpu

demo: setup
	$(BIN)/python -m yolofit.demo

bench: setup
	$(BIN)/python benchmarks/estimator.py
	$(BIN)/python benchmarks/operator_scale.py

# Regenerate what is derived from a source: CRDs from the API models, then the chart's copies,
# dashboard, RBAC and deploy/manifests (tests fail when any is stale).
manifests: venv
	$(BIN)/yolofit crds --write
	bash scripts/update-chart.sh

# Refresh the lock after changing dependencies in pyproject.toml.
lock: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip freeze --all --exclude-editable | grep -v -e '^yolofit' -e '^pip==' > requirements.lock

clean:
	-$(BIN)/yolofit sandbox down 2>/dev/null
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
