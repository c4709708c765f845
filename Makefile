# privml — the two commands a newcomer runs: `make demo` and `make test`.
# Both set everything up idempotently (a .venv refreshed when pyproject.toml changes,
# Debian packages installed when missing) and then run.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# Run as root in CI; elsewhere use sudo when it is there.
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all setup sysdeps demo test lint typecheck unit bench soak clean

all: test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	# torch first, pinned: pip takes this CPU build from local disk; unpinned pulls GBs of CUDA.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	# pycanon, the independent k/l/t checker of the anonymization tests, pins exact
	# numpy/pandas versions it does not need: installed without its dependencies.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps pycanon==1.3.6 beartype
	@touch $(STAMP)

# Debian packages the demo, tests and benchmarks need, installed only when missing:
# Fashion-MNIST, and chromium for the browser tests (driven by playwright; no browser
# download ever).
DEBS := $(if $(wildcard $(FASHION)),,dataset-fashion-mnist) $(if $(wildcard /usr/bin/chromium),,chromium)
sysdeps:
	@if [ -n "$(strip $(DEBS))" ]; then \
	  echo "installing Debian packages: $(strip $(DEBS))"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(DEBS); \
	fi

# The browser pages' libraries (TensorFlow.js and its wasm backend), from the lock file;
# served by the coordinator, never from a CDN. No install scripts run.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts
	@touch $@

setup: $(STAMP) sysdeps node_modules/.package-lock.json

demo: setup
	$(VENV)/bin/privml demo --out runs/demo --json runs/demo/summary.json

lint: setup
	$(VENV)/bin/ruff check

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest

test: lint typecheck unit

bench: setup
	$(PY) bench/sim_vs_flower.py

# The fault soak (issue 12), outside `make test`: 100 clients in 8 processes against a
# coordinator that is SIGKILLed and resumed, for PRIVML_SOAK_SECONDS (default 600); its
# figures go to bench/results/soak.json.
PRIVML_SOAK_SECONDS ?= 600
soak: setup
	PRIVML_SOAK_SECONDS=$(PRIVML_SOAK_SECONDS) $(PY) -m pytest tests/soak -m soak \
	  -p no:cacheprovider -s -q
	$(PY) bench/soak_report.py > /dev/null

clean:
	rm -rf $(VENV) node_modules runs .pytest_cache .mypy_cache .ruff_cache .hypothesis
