# segdet's two commands: `make demo` (set up + train/evaluate on the embedded sample data)
# and `make test` (set up + the test suite). Both run the idempotent set-up first.
# Use an existing environment instead of ./.venv with SEGDET_PYTHON=/path/to/python.
SHELL := /bin/bash
PYTHON := $(if $(SEGDET_PYTHON),$(SEGDET_PYTHON),$(CURDIR)/.venv/bin/python)
PYTEST_ARGS ?=

.PHONY: setup data demo test test-slow test-all clean
setup:
	@tools/setup_env.sh >/dev/null

data: setup
	$(PYTHON) tools/prepare_sample_data.py

demo: setup
	$(PYTHON) tools/run_demo.py

test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-slow: setup
	$(PYTHON) -m pytest -m slow $(PYTEST_ARGS)

test-all: setup
	$(PYTHON) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

clean:
	rm -rf output/ .pytest_cache
