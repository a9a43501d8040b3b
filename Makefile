# Every target builds .venv on demand: `python3 -m venv`, then an editable install of the
# project (and of clients/python) with test extras. The stamp file is rebuilt whenever a
# pyproject.toml changes, so a stale venv is refreshed rather than trusted.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fmt bench clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' -e './clients/python[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/token-broker demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check broker shotgrid_emulator tests bench clients/python
	$(BIN)/ruff format --check broker shotgrid_emulator tests bench clients/python
	$(BIN)/mypy
	$(BIN)/mypy --config-file clients/python/pyproject.toml clients/python/src/broker_client

fmt: $(STAMP)
	$(BIN)/ruff format broker shotgrid_emulator tests bench clients/python
	$(BIN)/ruff check --fix broker shotgrid_emulator tests bench clients/python

bench: $(STAMP)
	$(BIN)/python bench/token_bench.py
	$(BIN)/python bench/services_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
