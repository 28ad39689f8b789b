# Every target creates the virtual environment it needs; `unit` also needs node and npm.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
NODE_PEER := tests/interop/node
NODE_STAMP := $(NODE_PEER)/node_modules/.installed
# Autobahn|Testsuite's Python 3 port, beside the project (../shared/README.md).
AUTOBAHN_TOOLS ?= ../shared/tools/autobahn
WSTEST := $(HOME)/.venvs/abt/bin/wstest

.PHONY: demo test lint typecheck unit unit-pure fuzz fuzz-smoke autobahn autobahn-fast autobahn-slow bench clean

demo: $(STAMP)
	$(BIN)/wsproto demo

test: lint typecheck unit unit-pure fuzz-smoke autobahn-fast docs

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term-missing --cov-fail-under=100

# The same tests with the pure-Python masking that installs without a compiler
# (src/wsproto_core/mask.py), as `unit` tests the C extension: CI runs both.
# `unit` checks coverage, which both paths reach alike.
unit-pure: $(STAMP) $(NODE_STAMP)
	WSPROTO_CORE_PURE_PYTHON=1 $(BIN)/python -m pytest

fuzz: $(STAMP)
	$(BIN)/python fuzz/run.py

fuzz-smoke: $(STAMP)
	$(BIN)/python fuzz/run.py --smoke

# Every adapter as server and as client, all 517 cases, two runs at a time (a
# run keeps about one core busy); any case not OK or INFORMATIONAL fails.
AUTOBAHN_JOBS ?= 2
autobahn: $(STAMP) $(WSTEST)
	AUTOBAHN_TOOLS=$(AUTOBAHN_TOOLS) $(BIN)/python fuzz/autobahn/run.py --jobs $(AUTOBAHN_JOBS)

# The fast groups (1-7 and 10), in seconds: part of `make test`.
autobahn-fast: $(STAMP) $(WSTEST)
	AUTOBAHN_TOOLS=$(AUTOBAHN_TOOLS) $(BIN)/python fuzz/autobahn/run.py --fast --jobs $(AUTOBAHN_JOBS)

# The rest (9.x limits, 12.x and 13.x permessage-deflate), several minutes per
# run: CI runs it after `make test` for one adapter in both modes, taking
# turns by commit (`AUTOBAHN_SLOW_ADAPTERS=sync,asyncio,trio` for all).
AUTOBAHN_SLOW_ADAPTERS ?= rotate
autobahn-slow: $(STAMP) $(WSTEST)
	AUTOBAHN_TOOLS=$(AUTOBAHN_TOOLS) $(BIN)/python fuzz/autobahn/run.py --slow \
		--adapters $(AUTOBAHN_SLOW_ADAPTERS) --jobs $(AUTOBAHN_JOBS)

$(WSTEST):
	bash $(AUTOBAHN_TOOLS)/setup.sh

# Our adapters against their peers; pass options as `make bench BENCH_ARGS=--quick`.
# Node's ws takes part when npm is here to install it (tests/interop/node).
bench: $(BENCH_STAMP) $(if $(shell command -v npm),$(NODE_STAMP))
	$(BIN)/python -m wsproto_cli.bench $(BENCH_ARGS)

# The documentation site, into build/site/ (mkdocs.yml); any warning fails the build.
# NO_MKDOCS_2_WARNING silences a banner of the theme's about MkDocs 2.0.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

$(STAMP): pyproject.toml setup.py src/wsproto_core/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,fuzz,docs]'
	touch $(STAMP)

# The peers the benchmark compares with (the `bench` extra), in the same environment.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

# The Node `ws` peer of the interoperability tests, exactly as package-lock.json pins it.
$(NODE_STAMP): $(NODE_PEER)/package.json $(NODE_PEER)/package-lock.json
	cd $(NODE_PEER) && npm ci --silent --no-audit --no-fund
	touch $(NODE_STAMP)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
	rm -rf $(NODE_PEER)/node_modules
