# The two commands a newcomer needs: `make book` and `make test`.
#
# Which Python: outside a virtual environment every target uses .venv, made on first use
# with python3.12, python3.11 or python3 (whichever is 3.11 or 3.12), so a Debian/Ubuntu
# system Python (PEP 668, "externally-managed-environment") is never pip-installed into.
# Inside an active venv or conda env, with CI set, or with PY=... given, that Python is used.
# Whichever it is, `make test`, `make book` and the other targets install requirements.txt into
# it first (once per environment), so either command works alone in a fresh clone.
PROFILE ?= cpu
CHAPTERS ?=
JOBS ?=
FORCE ?=

ifeq ($(origin PY),undefined)
  ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX)$(CI),)
    PY := python3
  else
    VENV := .venv
    PY := $(VENV)/bin/python
  endif
endif

# Every target that runs the course's code first installs requirements.txt into the Python it
# uses (`make test` and `make book` alone work in a fresh clone, inside a venv or not), once: a
# stamp keyed to that Python's environment (sys.prefix) makes pip run again only when
# requirements.txt changes, or for another environment (`make install` with the stamp removed).
ifdef VENV
  STAMP := $(VENV)/.installed
else
  PY_PREFIX := $(shell $(PY) -c 'import sys; print(sys.prefix)' 2>/dev/null)
  STAMP := _build/.installed/$(or $(subst /,_,$(PY_PREFIX)),$(subst /,_,$(PY)))
endif
RUN_FLAGS := --profile $(PROFILE)$(if $(JOBS), --jobs $(JOBS))$(if $(FORCE), --force)

.PHONY: help install book test notebooks check run smoke site bench clean rehearse

help:
	@echo "make book       install what is missing, execute every chapter (cpu profile) in parallel, build the site"
	@echo "                (chapters whose inputs did not change are not re-run; FORCE=1 re-runs, JOBS=N sets workers)"
	@echo "make test       install what is missing, then the full test suite (what CI runs)"
	@echo "make notebooks  regenerate notebooks/ (exercises) from solutions/"
	@echo "make check      fast rules: notebooks in sync, no outputs, parameters and setup cells"
	@echo "make run PROFILE=smoke CHAPTERS=00_orientation   execute chapters with papermill"
	@echo "make site       build the site from the committed notebooks (no execution)"
	@echo "make bench      every benchmark in scripts/ (course PPO vs SB3, batched envs and MCTS vs one at a time, DT vs HF, ...)"
	@echo "make rehearse   the gpu profile offline on CPU against hub-shaped random-weight fixtures (report in _build/rehearse/)"
	@echo "Python: $(PY)$(if $(VENV), (made on first use; an active venv or PY=... is used instead))"

ifdef VENV
$(VENV)/bin/python:
	@py=""; for c in python3.12 python3.11 python3; do \
	  if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null; then py=$$c; break; fi; \
	done; \
	if [ -z "$$py" ]; then echo "make: no Python 3.11 or 3.12 found: install one (e.g. apt install python3.12-venv), or give PY=/path/to/python" >&2; exit 1; fi; \
	echo "make: creating $(VENV) with $$py ($$($$py -V)); every make target uses it (an active venv or PY=... skips it)"; \
	$$py -m venv $(VENV) || { rm -rf $(VENV); echo "make: '$$py -m venv' failed: on Debian/Ubuntu run 'sudo apt install python3-venv' (or python3.X-venv for your version), then make again" >&2; exit 1; }
endif

$(STAMP): requirements.txt | $(if $(VENV),$(VENV)/bin/python)
	$(PY) -m pip install -q -r requirements.txt
	@mkdir -p $(dir $(STAMP)) && touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(PY) -m utils.course run $(RUN_FLAGS) $(CHAPTERS) && $(PY) -m utils.course book --executed

# CI installs first (.ci/run) and passes PY=python3: the install here then finds everything there
test: $(STAMP)
	COURSE_PROFILE=smoke HF_HUB_OFFLINE=1 $(PY) -m pytest tests notebooks --nbval-lax --nbval-cell-timeout=600 -p no:cacheprovider --durations=15

notebooks: $(STAMP)
	$(PY) -m utils.course notebooks

check: $(STAMP)
	$(PY) -m utils.course check

run: $(STAMP)
	$(PY) -m utils.course run $(RUN_FLAGS) $(CHAPTERS)

smoke: $(STAMP)
	$(PY) -m utils.course run --profile smoke$(if $(JOBS), --jobs $(JOBS))$(if $(FORCE), --force) $(CHAPTERS)

site: $(STAMP)
	$(PY) -m utils.course book

bench: $(STAMP)
	$(PY) scripts/bench_ppo.py
	$(PY) scripts/bench_distil.py
	$(PY) scripts/bench_mcts.py
	$(PY) scripts/bench_maze.py
	$(PY) scripts/bench_dt.py
	$(PY) scripts/bench_sokoban.py
	$(PY) scripts/bench_rlhf.py
	$(PY) scripts/bench_minatar.py
	$(PY) scripts/bench_adapter.py

# the gpu profile on CPU, offline, against hub-shaped fixtures in _build/hub-fixtures (CHAPTERS=... for some)
rehearse: $(STAMP)
	$(PY) -m utils.lm.rehearse$(if $(CHAPTERS), --only $(CHAPTERS))

clean:
	rm -rf _build
