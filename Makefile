# Every target creates the virtual environment it needs; `unit` also needs node and npm.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_PEER := tests/interop/node
NODE_STAMP := $(NODE_PEER)/node_modules/.installed

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

unit: $(STAMP) $(NODE_STAMP)
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

# The Node `ws` peer of the interoperability tests, exactly as package-lock.json pins it.
$(NODE_STAMP): $(NODE_PEER)/package.json $(NODE_PEER)/package-lock.json
	cd $(NODE_PEER) && npm ci --silent --no-audit --no-fund
	touch $(NODE_STAMP)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
	rm -rf $(NODE_PEER)/node_modules
