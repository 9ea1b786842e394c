# The two commands: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv when it is missing. torch is installed first, pinned, so that
# stable-baselines3 does not pull a CUDA build with several GB of packages.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
SCALE ?= small
DEMO_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: venv test test-all lint bench demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest

test-all: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -m ""

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	OMP_NUM_THREADS=1 $(PY) benchmarks/memory_ops.py

# make demo SCALE=full: the README's budgets (about an hour); DEMO_ARGS="--out runs/x --seed 1" passes more options.
demo: venv
	$(PY) -m episodic_memory.train.cli demo --scale $(SCALE) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
