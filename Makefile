# The two commands a newcomer needs (see README):
#   make quickstart   the main job on the built-in dataset
#   make test         lint + the test suite
# Each creates or updates the virtual environment it needs first.

SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Extra arguments for the quickstart, e.g. `make quickstart ARGS=--tiny`.
ARGS ?=

.PHONY: venv quickstart test test-slow lint format clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The machine's local package mirror makes pip print one harmless "is ignored" line per
	# package it does not hold; they are filtered so real errors stay visible.
	$(BIN)/pip install --disable-pip-version-check -c constraints.txt -e ".[dev]" \
		| { grep -v "is ignored: it is neither" || true; }
	touch $(STAMP)

venv: $(STAMP)

quickstart: venv
	$(BIN)/fourm-lightning quickstart --out runs/quickstart $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

test-slow: venv
	$(BIN)/pytest -m slow

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
