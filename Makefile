# `make demo` runs the main job on the embedded default (assets, teacher, a small live search and its Pareto
# frontier); `make test` runs the test suite.
# Both create or reuse the virtualenv in .venv. GPU machines: add CONSTRAINTS= to install a CUDA build of torch.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints-cpu.txt
STAMP := $(VENV)/.distilsearch-installed
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: venv demo test lint

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

DEMO_RUN ?= results/runs/demo

demo: venv
	$(BIN)/distilsearch assets
	$(BIN)/distilsearch teacher --task rt-polarity
	$(BIN)/distilsearch search --task rt-polarity --agent random --budget 3 --fidelity low --min-speedup 3 --out $(DEMO_RUN)

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
