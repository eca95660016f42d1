# One entry point for a fresh machine with nothing but Python 3.11.
#   make run    main job: train on the real data if no champion exists, then serve (PORT=3000)
#               and run the journeys (the agent process beside the server)
#   make test   the whole test-suite
#   make bench  benchmarks (tables on stdout)
# Read by the bentoml CLI before it imports our code, so they are set here, not on import.
export OPENBLAS_NUM_THREADS ?= 1
export BENTOML_DO_NOT_TRACK ?= true
export BENTOML_HOME ?= $(CURDIR)/bentoml_home

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-fast bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

PORT ?= 3000

# One BENTOML_HOME per port: BentoML keeps /metrics' multiprocess files in
# $BENTOML_HOME/prometheus_multiproc_dir and empties it at start, so two servers on one
# host (make run PORT=3001 beside PORT=3000) must not share it (docs/deployment.md).
# The journey agent (python -m service.journeys) runs beside the server and stops with it.
run: $(STAMP)
	$(PY) -m training --if-missing $(ARGS)
	$(PY) -m service.journeys & agent=$$!; trap 'kill $$agent 2>/dev/null' EXIT INT TERM; \
	BENTOML_HOME=$(BENTOML_HOME)/serve-$(PORT) $(VENV)/bin/bentoml serve service.service:RevivalService --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not e2e" $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.features
	$(PY) -m benchmarks.training
	$(PY) -m benchmarks.serving
	$(PY) -m benchmarks.startup
	$(PY) -m tools.simulate
	$(PY) -m benchmarks.uplift
	$(PY) -m benchmarks.journeys --replay
	$(PY) -m benchmarks.customers
	$(PY) -m benchmarks.scale --factors 1,4
	$(PY) -m benchmarks.crosssell --factor 8

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) bentoml_home mlflow/mlflow.db mlflow/mlruns mlflow/artifacts var
