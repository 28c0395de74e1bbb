# One entry point for developers and CI. `make test` works on a fresh clone: it builds the
# virtualenv, fetches Kafka and builds FerretDB (both cached), starts them, then lints,
# type-checks and runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := -p tidemark
PYTEST_ARGS ?=

.PHONY: help venv services services-down services-reset lint typecheck test unit demo bench bench-quick bench-compare bench-features soak up down clean

help:
	@echo "make demo            run the example topology on the local stack"
	@echo "make test            lint, type-check and run every test (installs what it needs)"
	@echo "make services        start Kafka and FerretDB on loopback (idempotent)"
	@echo "make bench           throughput, recovery and memory against the ceiling and Quix Streams"
	@echo "make bench-quick     under 5 minutes: throughput and CPU per event at 300k events, before and after a change"
	@echo "make bench-features  the feature store beside Feast's MongoDB online store: latency, regression, freshness"
	@echo "make bench-compare   throughput of this tree beside an older checkout: BASE=DIR make bench-compare"
	@echo "make soak            30 minutes of traffic, kills and outages; writes bench/results/soak.md"
	@echo "make services-down   stop them; make services-reset also wipes their data"
	@echo "make up / make down  the compose stack (needs a Docker engine): Kafka, MongoDB, workers, Prometheus, Grafana"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt operators/_direct.c processor/runtime/_decode.c processor/kafka/_produce.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

services: venv
	PYTHON=$(BIN)/python devstack/stack.sh up

services-down:
	devstack/stack.sh down

services-reset:
	devstack/stack.sh reset

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy $(PACKAGES)

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test: lint typecheck services
	set -a; source .devstack/env; set +a; $(BIN)/pytest $(PYTEST_ARGS)

demo: services
	set -a; source .devstack/env; set +a; $(BIN)/tidemark demo config/examples/clicks-per-user.yaml

bench/.venv-quix/.installed: bench/requirements-quix.txt
	@test -x bench/.venv-quix/bin/python || $(PYTHON) -m venv bench/.venv-quix
	bench/.venv-quix/bin/python -m pip install -q -r bench/requirements-quix.txt
	@touch $@

bench/.venv-feast/.installed: bench/requirements-feast.txt
	@test -x bench/.venv-feast/bin/python || $(PYTHON) -m venv bench/.venv-feast
	bench/.venv-feast/bin/python -m pip install -q -r bench/requirements-feast.txt
	@touch $@

# Not part of `make test`: about 40 minutes; writes bench/results/latest.md and PNG charts.
bench: services bench/.venv-quix/.installed bench/.venv-feast/.installed
	set -a; source .devstack/env; set +a; \
	  $(BIN)/python -m bench.snapshots --keys 100000 --runs 3 && \
	  $(BIN)/python -m bench.snapshots --keys 1000000 --runs 1 && \
	  $(BIN)/python -m bench.features && \
	  $(BIN)/python -m bench.run $(BENCH_ARGS)

# Not part of `make test`: about 5 minutes, the feature store beside Feast's MongoDB online
# store (reads, regression, freshness; part of `make bench`). Writes bench/results/features.*
bench-features: services bench/.venv-feast/.installed
	set -a; source .devstack/env; set +a; $(BIN)/python -m bench.features $(BENCH_ARGS)

# Not part of `make test`: under 5 minutes, the throughput comparison at 300k events (ceiling
# and tidemark, 3 interleaved runs, CPU per event of each process) before and after a
# hot-path change. Writes bench/results/quick/.
QUICK_ARGS := --events 300000 --keys 50000 --runs 3
bench-quick: services
	set -a; source .devstack/env; set +a; \
	  $(BIN)/python -m bench.run --parts throughput --contenders ceiling,tidemark \
	    --results bench/results/quick --no-charts $(QUICK_ARGS) $(BENCH_ARGS)

# Not part of `make test`: throughput of this tree beside an older checkout in BASE (a git
# worktree of any earlier revision), interleaved per run. BENCH_ARGS come last,
# so they override the defaults below. Writes bench/results/compare/, never bench/results/.
COMPARE_ARGS := --events 300000 --keys 50000 --runs 3
bench-compare: services
	@test -n "$(BASE)" || { echo "usage: BASE=/path/to/old/checkout make bench-compare"; exit 2; }
	set -a; source .devstack/env; set +a; \
	  $(BIN)/python -m bench.run --parts throughput --contenders ceiling,tidemark,tidemark-baseline \
	    --baseline $(BASE) --results bench/results/compare --no-charts $(COMPARE_ARGS) $(BENCH_ARGS)

# Not part of `make test`: 30 minutes (SOAK_SECONDS overrides) on a broker and a MongoDB
# server of its own, so it can restart them.
soak: services
	set -a; source .devstack/env; set +a; $(BIN)/pytest -m soak tests/soak -s -q $(PYTEST_ARGS)

# Needs a Docker engine (not part of `make test`; the files are checked statically there).
COMPOSE := docker compose -f compose/docker-compose.yml
up:
	$(COMPOSE) up -d --build

down:
	$(COMPOSE) down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
