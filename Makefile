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

.PHONY: install demo test ui bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m ids_lakehouse demo --persons $(PERSONS) --seed $(SEED)

test: $(STAMP)
	$(PY) -m pytest

ui: $(STAMP)
	$(PY) -m ids_lakehouse instance
	set -m; exec $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench-quick: $(STAMP)
	$(PY) -m bench --quick

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(LAKE_ROOT) $(LANDING_ROOT) $(DAGSTER_HOME)
