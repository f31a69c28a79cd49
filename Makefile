# The two commands a newcomer needs: `make run` (the service, embedded default) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint venv services browser starter-model

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

# Debian's Chromium for the web page's tests (tests/test_web.py); never a downloaded browser.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: venv services browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q --durations=15  # the slowest tests, named in every CI log

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Reproduce the bundled starter model (47 classes) and its report from NIST_DATA_DIR, with 2,000
# pictures of each corpus kind rendered from the training split (~17 min on 2 CPU cores); the
# directory holds its neighbour index too.
starter-model: venv
	$(PY) -m trainer train --epochs 12 --rendered-per-kind 2000 --out trainer/bundled
