# Rapport: `make run` sets up and starts the demo; `make test` sets up and runs every check.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Demo mode allows the built-in secret key; set RAPPORT_SECRET_KEY for anything real.
export RAPPORT_DEMO ?= 1

.PHONY: install install-ai run test lint typecheck bench clean

install: $(VENV)/.installed

# The optional `ai` extra (sentence embeddings; torch's CPU wheel): the suite exercises both
# the default install's paths and the extra's.
install-ai: $(VENV)/.installed-ai

$(VENV)/.installed-ai: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,ai]"
	touch $@

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Rapport needs $(PYTHON) (set PYTHON=... to use another 3.11+)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: install
	mkdir -p var
	RAPPORT_PUBLIC_URL=$${RAPPORT_PUBLIC_URL:-http://$(HOST):$(PORT)} $(BIN)/rapport migrate
	RAPPORT_PUBLIC_URL=$${RAPPORT_PUBLIC_URL:-http://$(HOST):$(PORT)} $(BIN)/rapport demo
	RAPPORT_PUBLIC_URL=$${RAPPORT_PUBLIC_URL:-http://$(HOST):$(PORT)} $(BIN)/rapport serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

typecheck: install
	$(BIN)/mypy src

# One test process per core, and one more: every test has a database of its own
# (tests/conftest.py), and tests wait on subprocesses, browsers and PostgreSQL, which left the
# cores idle 15 % of a run with one process each (2 cores: 872 s with two, 790 s with three).
test: lint typecheck install-ai
	$(BIN)/pytest -n $$($(BIN)/python -c 'import os; print((os.cpu_count() or 1) + 1)') --dist worksteal

bench: install
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache test-artifacts
