# Every target builds .venv on demand: `python3 -m venv`, then an editable install of the
# project, every dependency at the version pinned in constraints.txt (the image installs
# the same pins). `make run` installs the runtime dependencies only (RUNTIME stamp); the
# other targets add clients/python and the test extras (STAMP, which implies RUNTIME). A
# stamp is rebuilt whenever a pyproject.toml or the pins change, so a stale venv is
# refreshed rather than trusted.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime

# `make run PORT=8001 SHOTGRID_PORT=8101`; DEMO_ARGS for the rest (`--log-format json`).
PORT ?= 8000
SHOTGRID_PORT ?= 8100
DEMO_ARGS ?=

CONSTRAINTS := constraints.txt
FRESH := .venv-constraints

.PHONY: run test test-client-min lint fmt bench clean constraints

$(RUNTIME): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e .
	touch $(RUNTIME)

$(STAMP): pyproject.toml clients/python/pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[test]' -e './clients/python[test]'
	touch $(STAMP) $(RUNTIME)

# Move the pins to the newest versions the pyproject.toml files allow: a fresh venv without
# constraints, then pip freeze. Run `make test` on the result before committing it.
constraints:
	rm -rf $(FRESH)
	$(PY) -m venv $(FRESH)
	$(FRESH)/bin/python -m pip install -q --upgrade pip
	$(FRESH)/bin/python -m pip install -q -e '.[test]' -e './clients/python[test]'
	{ sed -n '/^#/p' $(CONSTRAINTS); $(FRESH)/bin/python -m pip freeze --exclude-editable; } \
		> $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf $(FRESH)

run: $(RUNTIME)
	$(BIN)/token-broker demo --port $(PORT) --shotgrid-port $(SHOTGRID_PORT) $(DEMO_ARGS)

# The suite spreads over TEST_WORKERS processes (pytest-xdist), a file to a worker: a file's
# servers and module fixtures stay together. Most tests wait on sockets, so twice the cores
# keeps them busy; `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The client's own tests with every runtime dependency at the floor its pyproject declares
# (clients/python/constraints-min.txt), in a venv of their own; the emulator the sudo
# pool's tests use comes from this checkout (PYTHONPATH), not from an install.
VENV_MIN := clients/python/.venv-min
MIN_STAMP := $(VENV_MIN)/.installed

$(MIN_STAMP): clients/python/pyproject.toml clients/python/constraints-min.txt
	rm -rf $(VENV_MIN)
	$(PY) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install -q -c clients/python/constraints-min.txt \
		-e './clients/python[test]'
	touch $(MIN_STAMP)

test-client-min: $(MIN_STAMP)
	cd clients/python && PYTHONPATH=$(CURDIR) $(CURDIR)/$(VENV_MIN)/bin/python -m pytest \
		tests -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

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
	$(BIN)/python bench/revocation_bench.py

clean:
	rm -rf $(VENV) $(VENV_MIN) $(FRESH) .pytest_cache .mypy_cache .ruff_cache
