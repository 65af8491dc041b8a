# Every target sets itself up on a fresh machine: a virtualenv in .venv with the
# project installed editable, plus Debian packages the tests need (when root).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install sysdeps kafka-jars kafka test test-unit lint format demo bench bench-page data model clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# prometheus/promtool, chromium + chromedriver and kcat for the integration tests.
sysdeps:
	@bash scripts/sysdeps.sh

# Apache Kafka's jars from Maven Central into ~/.cache/tankwatch/kafka-<version>/lib
# (deploy/kafka/pom.xml; once, then cached). The integration and reliability suites
# run on that broker.
kafka-jars: install
	$(BIN)/python -m tankwatch.apache_kafka jars

# Apache Kafka (KRaft, one node) on localhost:9092 for you, no Docker; Ctrl-C stops it.
kafka: install kafka-jars
	$(BIN)/python -m tankwatch.apache_kafka run --port $(or $(KAFKA_PORT),9092)

# (TANKWATCH_TEST_BROKER=embedded: the suites on the embedded broker, no Java needed;
# the tests that need Apache Kafka itself then skip where it cannot run.)
# Two workers: the tests on the session broker on one, in order (as a serial run); the
# unit tests and the modules with brokers of their own on the other (tests/conftest.py);
# PYTEST_XDIST="-n 0" runs everything serially.
PYTEST_XDIST ?= -n 2
test: install sysdeps $(if $(filter embedded,$(TANKWATCH_TEST_BROKER)),,kafka-jars)
	$(BIN)/python -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: install
	$(BIN)/tankwatch demo

bench: install
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/long_span.py

# The dashboard page at 24 / 1,000 / 5,000 tanks in headless Chromium (docs/performance.md).
bench-page: install sysdeps
	$(BIN)/python bench/page.py

# Regenerate the bundled history byte-for-byte from its committed config and seed.
data: install
	$(BIN)/tankwatch simulate --config data/sim_config.json --out data/history.csv.gz --labels data/labels.csv

# Retrain the committed default artifact from the bundled history.
model: install
	$(BIN)/tankwatch train --data data/history.csv.gz --out models/artifacts/default --interval 60 --seed 7

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
