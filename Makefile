# Developer and CI entry points. `make test` is what .ci/run runs.
PY ?= python3
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# Touched after a successful install: the venv is rebuilt only when pyproject.toml changes.
INSTALLED := $(VENV)/.installed

.PHONY: venv up down status demo bench test test-slow chaos lint prometheus-tools k8s-tools docs clearing-scale soak move-pause

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

# kustomize and kubeconform (go install, into ~/.cache/smallcups/bin): tests/unit/test_k8s.py
# renders every deploy/k8s overlay with the one and validates it with the other, against
# the schemas in deploy/k8s/schemas. kubectl is not needed.
k8s-tools:
	bash scripts/install_k8s_tools.sh

# Regenerate what docs/ derives from the code (make test fails when any of it is stale):
# the metrics table (engine/worker/metrics.py), the JSON Schemas (engine/core/messages.py)
# and the configuration reference (engine/core/config.py).
docs: venv
	$(BIN)/python -m scripts.metrics_table --write docs/observability.md
	$(BIN)/python -m scripts.schema --write docs/schema
	$(BIN)/python -m scripts.config_table --write docs/configuration.md

# The suite, then the leak scan: no password or key the stack made may appear in any log,
# output, result or dead letter the suite left behind (scripts/scan_secrets.py).
test: venv prometheus-tools k8s-tools up lint
	set -o pipefail; $(BIN)/pytest -m 'not slow' --basetemp=.smallcups/test-tmp 2>&1 | tee .smallcups/test-output.log
	$(BIN)/python -m scripts.scan_secrets .smallcups/test-output.log

# The integration tests marked slow (make test skips them; the chaos suite's long ones
# run with `make chaos`): edge cases of archiving and of the migration that partitions
# the journal.
test-slow: venv up
	$(BIN)/pytest tests/integration -m slow --basetemp=.smallcups/slow-tmp

# The chaos suite at full length (issue 7) on its own stack: longer loads, 30 SIGKILLs;
# each scenario's figure is printed at the end. `make test` runs the short version.
chaos: venv lint
	SMALLCUPS_CHAOS_SCALE=long $(BIN)/pytest tests/chaos -m chaos --basetemp=.smallcups/chaos-tmp

# The pause of a move with a pre-copy against the moved partition's history: 1x, 10x and
# 100x the integration tests', under load, Postgres to Postgres and to MariaDB (issue 24).
# Not part of `make test`.
move-pause: venv up
	SMALLCUPS_CONFIG=.smallcups/local.toml $(BIN)/python -m scripts.move_pause

# One partner's clearing statement out of a day of 1,000,000 loans on 4 throwaway cups:
# its time and peak memory (issue 22). Not part of `make test`.
clearing-scale: venv up
	SMALLCUPS_CONFIG=.smallcups/local.toml $(BIN)/python -m scripts.clearing_scale

# Half an hour of steady load on a throwaway system (issue 24): the idempotency window
# pruning, the journal archived, two partitions moved; minute by minute latency, commit
# time and table sizes, the move pauses, reconcile at the end (.smallcups/soak.json).
# Not part of `make test`. Shorter: make soak SOAK_SECONDS=600.
SOAK_SECONDS ?= 1800
soak: venv up
	SMALLCUPS_CONFIG=.smallcups/local.toml $(BIN)/python -m loadtest.soak --seconds $(SOAK_SECONDS)
