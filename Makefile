# Developer and CI entry points. `make test` is what .ci/run runs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Touched after a successful install: the venv is rebuilt only when pyproject.toml changes.
INSTALLED := $(VENV)/.installed

.PHONY: venv up down status demo bench test chaos lint prometheus-tools docs

venv: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev,load]'
	touch $@

up: venv
	$(BIN)/smallcups dev up

down: venv
	$(BIN)/smallcups dev down

status: venv
	$(BIN)/smallcups dev status

# The main job on the local stack: init, workers, a bounded load, the books checked.
# More of both: make demo WORKERS=4 CUPS=6 (cups are added online and rebalanced).
WORKERS ?= 2
CUPS ?= 0
demo: venv up
	$(BIN)/smallcups demo --workers $(WORKERS) --cups $(CUPS)

# The benchmark at full size (issue 5): every mode, the table, the ratios, the JSON;
# RUNS times (the medians are quoted: this machine is noisy).
RUNS ?= 3
bench: venv up
	$(BIN)/smallcups bench --runs $(RUNS) --json .smallcups/bench.json

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# prometheus and promtool (Debian's package; its own service is left stopped and disabled).
prometheus-tools:
	bash scripts/install_prometheus_tools.sh

# Regenerate what docs/ derives from the code (make test fails when any of it is stale):
# the metrics table (engine/worker/metrics.py), the JSON Schemas (engine/core/messages.py)
# and the configuration reference (engine/core/config.py).
docs: venv
	$(BIN)/python -m scripts.metrics_table --write docs/observability.md
	$(BIN)/python -m scripts.schema --write docs/schema
	$(BIN)/python -m scripts.config_table --write docs/configuration.md

test: venv prometheus-tools up lint
	$(BIN)/pytest -m 'not slow'

# The chaos suite at full length (issue 7) on its own stack: longer loads, 30 SIGKILLs;
# each scenario's figure is printed at the end. `make test` runs the short version.
chaos: venv lint
	SMALLCUPS_CHAOS_SCALE=long $(BIN)/pytest tests/chaos -m chaos --basetemp=.smallcups/chaos-tmp
