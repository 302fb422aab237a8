# aduan: `make run` trains the default model when missing and serves it; `make test` runs
# every check. Both install the project into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REGISTRY ?= models
PRESET ?= fast
HOST ?= 127.0.0.1
PORT ?= 8000
# The PyTorch CPU wheel lies on disk on these machines; without it pip would fetch a CUDA build.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
# The folders that install as the `aduan` package (see pyproject.toml, ARCHITECTURE.md).
PACKAGES := aduan model service training data
# A strict editable install links every package file into build/__editable__*, so type
# checkers see `aduan.*` like an installed wheel; it is refreshed when files are added/removed.
EDITABLE := --no-build-isolation --config-settings editable_mode=strict

.PHONY: install install-run run train serve test lint bench audit reliability clean FORCE

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# What each entry point installs beside the core (pyproject.toml): `make run|train|serve`
# serve and train; `make test` adds what the tests use (PostgreSQL, Ray, the dev tools; the
# Ray and MLflow tests skip where their extra is missing). A server alone needs only the
# core: `pip install .` (ONNX and TF-IDF models, no torch).
EXTRAS_run := train
EXTRAS_test := train,postgres,ray,dev

$(VENV)/.deps-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=77'
	$(BIN)/python -m pip install -q $(FIND_LINKS) $(EDITABLE) -e '.[$(EXTRAS_$*)]'
	touch $@

# The list of package files; rewritten only when it changes, so the link tree is rebuilt only
# when a file was added, removed or renamed.
$(VENV)/.files: FORCE | $(BIN)/python
	@find $(PACKAGES) -type f -not -path '*/__pycache__/*' | sort > $@.new
	@cmp -s $@.new $@ && rm $@.new || mv $@.new $@

$(VENV)/.linked-%: $(VENV)/.deps-% $(VENV)/.files
	$(BIN)/python -m pip install -q --no-deps $(EDITABLE) -e .
	touch $@

# Stamps, not intermediate files: make would delete them after each run and reinstall.
.PRECIOUS: $(VENV)/.deps-% $(VENV)/.linked-%

install: $(VENV)/.linked-test
install-run: $(VENV)/.linked-run

# Serve at once (the baseline, trained first when the registry is empty) and swap in $(PRESET)
# when its background training is done (hot reload): see `aduan up --help`.
run: install-run
	$(BIN)/aduan up --registry $(REGISTRY) --preset $(PRESET) --host $(HOST) --port $(PORT)

train: install-run
	$(BIN)/aduan train --preset $(PRESET) --registry $(REGISTRY) --promote

serve: install-run
	$(BIN)/aduan serve --registry $(REGISTRY) --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check $(PACKAGES) tests bench
	$(BIN)/ruff format --check $(PACKAGES) tests bench
	MYPYPATH="$$(echo build/__editable__.aduan-*)" $(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# Inference speed of the live transformer against the alternative and the compute limit, the
# service over HTTP for both model kinds (bench/README.md).
bench: install
	$(BIN)/python bench/perf.py --model $$($(BIN)/aduan models path --registry $(REGISTRY) --preset $(PRESET)) \
		--baseline $$($(BIN)/aduan models path --registry $(REGISTRY) --preset baseline)

# Known vulnerabilities in the installed environment (PyPI's advisory data); every accepted
# exception is listed, with its reason, in audit-exceptions.txt.
audit: install
	$(BIN)/python bench/audit.py

# The long reliability runs (60 s loads per model kind, overload, faults, deeper fuzzing);
# each writes its figures to bench/results/reliability/, and RELIABILITY.md's table is
# rendered from them.
RELIABILITY_TESTS := tests/service/test_load.py tests/service/test_faults.py tests/service/test_hostile.py \
  tests/service/test_fuzz.py tests/service/test_security.py tests/service/test_security_data.py \
  tests/service/test_security_sessions.py tests/model/test_model_files.py tests/training/test_training_inputs.py
reliability: install
	ADUAN_FIGURES=bench/results/reliability ADUAN_FUZZ_EXAMPLES=200 $(BIN)/python -m pytest \
	  -m "reliability or not slow" $(RELIABILITY_TESTS)
	ADUAN_FIGURES=bench/results/reliability $(BIN)/python bench/audit.py
	$(BIN)/python bench/reliability.py

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
