# fsa: `make run` runs the main job, `make test` the tests. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision first, pinned (README, "Quick start"): the builds this project is tested with.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: help install run test test-fast bench gpu-check study lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed  ## create .venv and install fsa with its dependencies

run: install  ## the main job: guidance on the embedded digits setup, with the proof that it works (CPU, ~2 min)
	$(VENV)/bin/fsa device=cpu $(ARGS)

# Two pytest workers, one torch thread each (OMP_NUM_THREADS, inherited by fsa's subprocesses): on this
# project's 2-core machine twice the throughput of one worker with two threads (docs/tests.md).
PYTEST := HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile

test: install  ## the default test suite: CPU only, no downloads (~9 min here)
	$(PYTEST) -m "not gpu and not weights" $(ARGS)

test-fast: install  ## the tests without the slow ones (~2 min here)
	$(PYTEST) -m "not gpu and not weights and not slow" $(ARGS)

bench: install  ## time one guided iteration and its parts (SD 1.4 shapes, random weights), e.g. ARGS="--tiny"
	$(PY) scripts/bench.py $(ARGS)

gpu-check: install  ## on a CUDA machine: gpu tests, the main job, the bench at 512 px (~6.5 min on an H200)
	PYTHON=$(PY) bash scripts/gpu_check.sh $(ARGS)

study: install  ## the schedule study on digits: best and final distance against FLOPs on two target sets (~40 min)
	$(PY) scripts/schedule_study.py $(ARGS)

lint: install  ## ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean:  ## remove outputs (keeps .venv)
	rm -rf outputs/runs outputs/multiruns .pytest_cache
