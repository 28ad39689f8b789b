# Every target creates the virtual environment it needs; nothing else is assumed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit fuzz fuzz-smoke clean

demo: $(STAMP)
	$(BIN)/wsproto demo

test: lint typecheck unit fuzz-smoke

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term-missing --cov-fail-under=100

fuzz: $(STAMP)
	$(BIN)/python fuzz/run.py

fuzz-smoke: $(STAMP)
	$(BIN)/python fuzz/run.py --smoke

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,fuzz]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
