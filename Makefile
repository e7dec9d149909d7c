# The two set-up commands: `make up` (install, start the demo) and `make test` (install, lint, test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEV_INSTALLED := $(VENV)/.dev-installed

.PHONY: up test install dev lint typecheck format pytest browser down status clean

up: $(INSTALLED)
	$(BIN)/orchestrator up

down: $(INSTALLED)
	$(BIN)/orchestrator down

status: $(INSTALLED)
	$(BIN)/orchestrator status

test: lint pytest

install: $(INSTALLED)
dev: $(DEV_INSTALLED)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "orchestrator needs Python 3.11 or newer; found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# setuptools announces every editable install with a boxed "Editable installation." warning (its
# InformationOnly, not a deprecation), which pip shows even with --quiet: only that one is hushed.
EDITABLE := PYTHONWARNINGS="ignore:Editable installation,ignore:Compat editable installs" \
	$(BIN)/python -m pip install --quiet -e
# `compat`: the checkout is one path line in a .pth file. setuptools' default for our flat layout
# is an import hook (`__editable___orchestrator_*_finder`) that every interpreter of the venv
# imports at start-up, with pathlib and importlib.util: `python -c pass` 47 -> 20 ms, paid by each
# CLI call, the fork server's template and `up -d`. setuptools calls compat transitional: where
# it is gone, the install falls back to the default mode (with its errors shown, if it fails too).
COMPAT := --config-settings editable_mode=compat

# Our packages are byte-compiled once here: where PYTHONDONTWRITEBYTECODE is set (some containers
# and CI images), Python would otherwise compile them from source at every start, about 0.25 s
# of each CLI call and of `up -d`. A source edited later is compiled in memory, as usual.
# The Makefile is a prerequisite too: a venv made by an older one is installed again its way.
$(INSTALLED): $(BIN)/python pyproject.toml Makefile
	$(EDITABLE) . $(COMPAT) 2> /dev/null || $(EDITABLE) .
	$(BIN)/python -m compileall -q orchestrator module_sdk broker > /dev/null
	@touch $@

$(DEV_INSTALLED): $(INSTALLED)
	$(EDITABLE) '.[dev]' $(COMPAT) 2> /dev/null || $(EDITABLE) '.[dev]'
	@touch $@

lint: $(DEV_INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# Module directories are not importable names (mod-dummy-producer), so each file is checked as text.
	@for f in modules-backend/*/__init__.py; do \
		out=$$($(BIN)/mypy --config-file= --strict --no-error-summary -c "$$(cat $$f)" 2>&1) \
			|| { echo "mypy: $$f:"; echo "$$out" | sed 's/^<string>/  line/'; exit 1; }; \
	done

typecheck: $(DEV_INSTALLED)
	$(BIN)/mypy

format: $(DEV_INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Two workers, each test file on one of them (module fixtures such as NATS servers and hosts are
# shared within a file): the tests mostly wait on real processes and sockets, so two workers
# halve the wall time on a 2-core machine. PYTEST_WORKERS=0 runs them in one process.
PYTEST_WORKERS ?= 2
pytest: $(DEV_INSTALLED) browser
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# The status page is tested in a real headless Chromium (Debian's package). Where none is on PATH
# and apt-get can install it (as root), it is installed, tried once per venv; elsewhere its test
# is skipped and says why.
BROWSER_TRIED := $(VENV)/.browser-tried
browser: $(DEV_INSTALLED)
	@for name in chromium chromium-browser google-chrome chrome headless_shell; do \
		command -v $$name > /dev/null && exit 0; \
	done; \
	if [ -e $(BROWSER_TRIED) ]; then exit 0; fi; touch $(BROWSER_TRIED); \
	if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
		echo "installing Debian's chromium for the status page test (log: $(VENV)/browser.log)"; \
		{ timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 \
			apt-get install -y -qq --no-install-recommends chromium; } > $(VENV)/browser.log 2>&1 \
			|| echo "could not install chromium (see $(VENV)/browser.log): the status page test skips"; \
	else \
		echo "no Chromium on PATH: the status page test skips (apt-get install chromium)"; \
	fi

clean:
	rm -rf $(VENV) $(COMPARE_VENV) .mypy_cache .pytest_cache .ruff_cache build dist *.egg-info

# The benchmarks of the performance issue (real processes, raw pyzmq baselines measured in the
# same run): prints a table, writes bench/results.json, exits 1 if a target is missed.
.PHONY: bench bench-compare
bench: $(DEV_INSTALLED)
	$(BIN)/python -m bench

# The same restart, cold start and footprint figures, next to supervisord's and Circus's for the
# same ten children, measured in the same run. Both go into their own venv, not into ours.
COMPARE_VENV := .venv-compare
$(COMPARE_VENV)/.installed:
	$(PYTHON) -m venv $(COMPARE_VENV)
	$(COMPARE_VENV)/bin/pip install --quiet supervisor==4.3.0 circus==0.19.0
	touch $@

bench-compare: $(DEV_INSTALLED) $(COMPARE_VENV)/.installed
	$(BIN)/python -m bench --only restart coldstart footprint rivals --output bench/compare.json
