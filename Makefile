# privml — the two commands a newcomer runs: `make demo` and `make test`.
# Both set everything up idempotently (a .venv refreshed when pyproject.toml or the lock
# files change, Debian packages installed when missing) and then run.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCKS  := requirements/dev.lock requirements/nodeps.lock
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# Run as root in CI; elsewhere use sudo when it is there.
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all setup sysdeps demo test lint typecheck security unit bench soak fuzz lock advisories audit clean

all: test

# The environment is the lock files, every file checked against its hash: the whole set,
# so nothing is resolved (--no-deps), pip and setuptools included, torch the CPU build from
# /opt/wheels. pycanon (the tests' k/l/t checker) has its own lock: it pins exact
# numpy/pandas versions it does not need. privml itself last, editable (hash mode refuses
# editable installs), built with the locked setuptools: nothing unhashed is downloaded.
$(STAMP): pyproject.toml $(LOCKS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
	  $(addprefix -r ,$(LOCKS))
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# `make lock` recompiles the lock files after a change to pyproject.toml (dependencies, the
# dev extra) or requirements/*.in, keeping every pin that still fits; `make lock
# LOCK_ARGS=--upgrade` moves them all to the newest releases. pip-compile runs in its own
# venv (.venv-lock), never in the audited one. Then `make advisories`, `make test`.
LOCKENV := $(VENV)-lock
lock:
	@test -x $(LOCKENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCKENV) && \
	  $(LOCKENV)/bin/python -m pip install -q --disable-pip-version-check \
	    pip==26.3 pip-tools==7.6.2; }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCKENV)/bin/pip-compile --quiet --generate-hashes \
	  --allow-unsafe --strip-extras --extra dev --no-emit-index-url --no-emit-find-links \
	  $(LOCK_ARGS) -o requirements/dev.lock pyproject.toml requirements/dev.in
	$(LOCKENV)/bin/python tools/lock_nodeps.py requirements/nodeps.in requirements/nodeps.lock

# The advisory snapshot `make audit` reads: OSV records for every locked pin, from OSV or
# PyPI's JSON API (tools/refresh_advisories.py says which, and which pins neither covers).
advisories: $(STAMP)
	$(PY) tools/refresh_advisories.py $(LOCKS)

# `make audit` (outside `make test`): the project's own environment, installed from the
# lock, against the snapshot kept in security/ (offline: served to pip-audit on loopback);
# a JSON and a SARIF report in runs/audit/, exit 1 on a known-vulnerable package. It first
# fails if the snapshot is older than the lock.
ADVISORIES ?= security/advisories.osv.json
AUDIT_DIR  ?= runs/audit
audit: $(STAMP)
	$(PY) tools/refresh_advisories.py --check $(LOCKS)
	$(VENV)/bin/privml audit deps --python $(VENV) --advisories $(ADVISORIES) \
	  --json $(AUDIT_DIR)/deps.json --sarif $(AUDIT_DIR)/deps.sarif

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

# bandit on src/ at every severity; an accepted finding says `# nosec BXXX  # why` on its line
security: setup
	$(PY) tools/security_check.py src

unit: setup
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest

test: lint typecheck security unit

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

# Fuzzing (issue 13), outside `make test`: every parser of untrusted input under atheris
# (fuzz/fuzz_*.py) for FUZZ_SECONDS each (default 60); crashing inputs go to
# tests/fuzz_corpus/ (replayed by `make test`), figures to fuzz/results.json and SECURITY.md.
# atheris is the optional `fuzz` extra, installed here when missing.
FUZZ_SECONDS ?= 60
fuzz: setup
	@$(PY) -c "import atheris" 2>/dev/null || \
	  $(PY) -m pip install -q --disable-pip-version-check "atheris==2.3.0"
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) fuzz/run.py

clean:
	rm -rf $(VENV) $(LOCKENV) node_modules runs .pytest_cache .mypy_cache .ruff_cache .hypothesis
