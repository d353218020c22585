# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export LAKE_ROOT ?= $(CURDIR)/lake
export LANDING_ROOT ?= $(CURDIR)/landing
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
PERSONS ?= 5000
SEED ?= 42

.PHONY: install browser java demo test ui console bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Chromium for the UI check (tests/test_ui.py): installed from Debian when missing, without a
# prompt; sudo only when not root. Playwright's own browser download is not used.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# Java for linkage on Spark in local mode (tests/test_spark_linkage.py), from Debian when
# missing, like Chromium.
java:
	command -v java >/dev/null || ($(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless)

demo: $(STAMP)
	$(PY) -m pipelines demo --persons $(PERSONS) --seed $(SEED)

test: $(STAMP) browser java
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

ui: $(STAMP)
	$(PY) -m pipelines instance
	set -m; IDS_PSEUDONYM_KEY="$${IDS_PSEUDONYM_KEY:-$$(cat .ids_secrets/pseudonym.key 2>/dev/null)}" \
		IDS_CONSOLE_URL="$${IDS_CONSOLE_URL:-http://127.0.0.1:8080}" \
		exec $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The service (sharing gateway and steward's console) on 127.0.0.1:8080, over the demo lake.
console: $(STAMP)
	set -m; IDS_PSEUDONYM_KEY="$${IDS_PSEUDONYM_KEY:-$$(cat .ids_secrets/pseudonym.key 2>/dev/null)}" \
		IDS_DAGSTER_URL="$${IDS_DAGSTER_URL:-http://127.0.0.1:3000}" \
		exec $(PY) -m ids_lakehouse serve --host 127.0.0.1 --port 8080

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-quick: $(BENCH_STAMP)
	$(PY) -m bench --quick

bench: $(BENCH_STAMP)
	$(PY) -m bench

clean:
	rm -rf $(LAKE_ROOT) $(LANDING_ROOT) $(DAGSTER_HOME)
