# The two commands a newcomer needs: `make book` and `make test`.
PY ?= python3
PROFILE ?= cpu
CHAPTERS ?=

.PHONY: help install book test notebooks check run smoke site bench clean

help:
	@echo "make book       install what is missing, execute every chapter (cpu profile), build the site"
	@echo "make test       the full test suite (what CI runs)"
	@echo "make notebooks  regenerate notebooks/ (exercises) from solutions/"
	@echo "make check      fast rules: notebooks in sync, no outputs, parameters and setup cells"
	@echo "make run PROFILE=smoke CHAPTERS=00_orientation   execute chapters with papermill"
	@echo "make site       build the site from the committed notebooks (no execution)"
	@echo "make bench      course PPO vs Stable-Baselines3 PPO on the same gridworld and budget"

install:
	$(PY) -m pip install -q -r requirements.txt

book: install
	$(PY) -m utils.course run --profile $(PROFILE) $(CHAPTERS)
	$(PY) -m utils.course book --executed

test:
	COURSE_PROFILE=smoke HF_HUB_OFFLINE=1 $(PY) -m pytest tests solutions --nbval-lax --nbval-cell-timeout=600 -p no:cacheprovider --durations=15

notebooks:
	$(PY) -m utils.course notebooks

check:
	$(PY) -m utils.course check

run:
	$(PY) -m utils.course run --profile $(PROFILE) $(CHAPTERS)

smoke:
	$(PY) -m utils.course run --profile smoke $(CHAPTERS)

site:
	$(PY) -m utils.course book

bench:
	$(PY) scripts/bench_ppo.py

clean:
	rm -rf _build
