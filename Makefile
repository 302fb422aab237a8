# aduan: `make run` trains the default model when missing and serves it; `make test` runs
# every check. Both install the project into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= models/default
PRESET ?= baseline
HOST ?= 127.0.0.1
PORT ?= 8000
# The PyTorch CPU wheel lies on disk on these machines; without it pip would fetch a CUDA build.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: install run train serve test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(FIND_LINKS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

$(MODEL)/config.json: | install
	$(BIN)/aduan train --preset $(PRESET) --output $(MODEL)

train: $(MODEL)/config.json

serve: install
	$(BIN)/aduan serve --model $(MODEL) --host $(HOST) --port $(PORT)

run: train serve

lint: install
	$(BIN)/ruff check model service training tests bench
	$(BIN)/ruff format --check model service training tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/batching.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
