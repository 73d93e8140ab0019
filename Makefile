# Treadle: every entry point a developer or CI needs. `make run` and `make test` work on a
# fresh clone with only Python 3.11+ installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
CHAOS_ARGS ?=
FUZZ_EXAMPLES ?= 1000

.PHONY: install run test test-fast lint fmt typecheck migrate revision bench chaos fuzz clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/treadle migrate
	$(BIN)/treadle seed
	$(BIN)/treadle dev

lint: $(STAMP)
	$(BIN)/ruff check src tests migrations bench chaos
	$(BIN)/ruff format --check src tests migrations bench chaos
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format src tests migrations bench chaos
	$(BIN)/ruff check --fix src tests migrations bench chaos

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# Benchmark on the machine's PostgreSQL and Redis (see bench/__main__.py): the table to stdout,
# JSON to $BENCH_JSON (default bench-results.json). BENCH_ARGS="--quick" for a smoke run.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Chaos on the machine's PostgreSQL plus a private redis-server (see chaos/__init__.py): 200 runs
# while workers, Redis, PostgreSQL backends and an API are killed; one table, non-zero on failure.
# CHAOS_ARGS="--runs 20 --min-kills 5" for a short run.
chaos: $(STAMP)
	$(BIN)/python -m chaos $(CHAOS_ARGS)

# The hostile-input pass of tests/e2e/test_fuzz.py at length: FUZZ_EXAMPLES cases per API and
# server (embedded SQLite, and PostgreSQL + Redis when TREADLE_TEST_* name them), fresh random
# cases each run; prints cases, 5xx and the slowest answer. `make test` runs 40, derandomized.
fuzz: $(STAMP)
	TREADLE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) TREADLE_FUZZ_RANDOM=1 \
		$(BIN)/pytest tests/e2e/test_fuzz.py $(PYTEST_ARGS)

migrate: $(STAMP)
	$(BIN)/treadle migrate

revision: $(STAMP)
	$(BIN)/alembic revision --autogenerate -m "$(m)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis treadle.db* .treadle
