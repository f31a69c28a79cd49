# The two commands a newcomer needs: `make run` (the service, embedded default) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint venv services

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[api,worker,dev]'
	touch $@

venv: $(VENV)/.installed

run: venv
	PY=$(PY) bash scripts/run-local.sh

services:
	bash scripts/ensure-services.sh

test: venv services
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
