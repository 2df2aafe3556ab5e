# The two commands of the README. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Install autoflow and run the main example on the embedded default (SQLite, no server).
quickstart: $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python examples/quickstart.py

# Install the test dependencies, check style and types, run the whole suite:
# fast tests in parallel, then the slow chaos/browser tests on their own.
test: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	$(MAKE) lint
	$(BIN)/python -m pytest -n 2 -m "not slow"
	$(BIN)/python -m pytest -m slow
	$(BIN)/python -m pytest --nbval-lax notebooks/

lint:
	$(BIN)/ruff check autoflow tests examples benchmarks
	$(BIN)/ruff format --check autoflow tests examples benchmarks
	$(BIN)/mypy
