# clinhub: `make demo` and `make test` work on a fresh machine (they create .venv and install first).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format bench serve clean install

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found (clinhub needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,ml]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/clinhub demo

serve: $(STAMP)
	CLINHUB_DEMO=1 $(BIN)/clinhub serve --migrate

test: $(STAMP)
	$(BIN)/ruff check clinhub tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check clinhub tests benchmarks
	$(BIN)/ruff format --check clinhub tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format clinhub tests benchmarks
	$(BIN)/ruff check --fix clinhub tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) clinhub-data .pytest_cache .ruff_cache
