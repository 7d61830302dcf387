# The two commands a newcomer needs (see README):
#   make quickstart   the main job on the built-in dataset
#   make test         lint, the test suite, the tiny quickstart and the notebooks on its run
# (`make quickstart-caption` is a longer plan for caption -> RGB; see README.)
# Each creates or updates the virtual environment it needs first.

SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Extra arguments for the quickstart, e.g. `make quickstart ARGS=--tiny`.
ARGS ?=
# Where `make test` runs the tiny quickstart that the notebooks then read.
TEST_RUN ?= runs/test_quickstart

.PHONY: venv quickstart quickstart-caption test unit e2e notebooks test-slow lint format clean

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

# The quickstart with 28 minutes of 4M instead of ~18, for caption -> RGB with its colours
# (about 39 minutes on 2 cores; configs/quickstart/caption.yaml).
quickstart-caption: venv
	$(BIN)/fourm-lightning quickstart --plan configs/quickstart/caption.yaml --out runs/caption $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint unit notebooks

unit: venv
	$(BIN)/pytest

# The main job's smoke version, from scratch (a leftover run would only be skipped stage by stage).
e2e: venv
	rm -rf $(TEST_RUN)
	$(BIN)/fourm-lightning quickstart --tiny --out $(TEST_RUN)

notebooks: e2e
	FOURM_RUN=$(TEST_RUN) $(BIN)/pytest --nbmake notebooks

test-slow: venv
	$(BIN)/pytest -m slow

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
