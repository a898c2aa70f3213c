# shardflow: `make demo` runs the pipeline on the embedded local endpoint,
# `make test` runs the test suite, `make docs` builds the documentation site into site/
# (strict: a warning fails it). Each sets up what it needs on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KINESALITE_DIR := .tools/kinesalite
KINESIS_MOCK_DIR := .tools/kinesis-mock
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench clean setup docs

setup: $(STAMP) $(KINESALITE_DIR)/node_modules/kinesalite $(KINESIS_MOCK_DIR)/node_modules/kinesis-local

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	touch $(STAMP)

$(KINESALITE_DIR)/node_modules/kinesalite:
	mkdir -p $(KINESALITE_DIR)
	npm install --silent --no-audit --no-fund --prefix $(KINESALITE_DIR) kinesalite@3

# kinesis-mock: enhanced fan-out (SubscribeToShard), UpdateShardCount, ChildShards
$(KINESIS_MOCK_DIR)/node_modules/kinesis-local:
	mkdir -p $(KINESIS_MOCK_DIR)
	npm install --silent --no-audit --no-fund --prefix $(KINESIS_MOCK_DIR) kinesis-local@0.6

demo: $(STAMP)
	$(BIN)/shardflow demo

test: setup
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy --strict src

check: lint test

bench: $(STAMP)
	$(BIN)/python -m benchmarks

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache site
