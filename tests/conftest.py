"""Shared fixtures: a tiny random model built by the suite's own `model` stage (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from grape import runtime

REPO = Path(__file__).resolve().parents[1]
runtime.set_offline()


def pytest_collection_modifyitems(config, items):
    """The tiers in order, in one session (the shared workflow run serves both later tiers): unit tests, then the
    end-to-end ones (`slow`), then the environment's (`env`: vLLM, Slurm, a browser)."""
    tier = lambda item: 2 if item.get_closest_marker("env") else 1 if item.get_closest_marker("slow") else 0
    items.sort(key=tier)  # stable: file order within a tier


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The `tiny` experiment run end to end by the real snakemake, once per test session (workflow and SLURM tests
    compare against it): (workdir, results/tiny)."""
    from helpers import snakemake

    workdir = tmp_path_factory.mktemp("tiny_run")
    proc = snakemake(workdir, "--cores", "2", "--config", "experiment=tiny")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return workdir, workdir / "results" / "tiny"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from grape import models

    cfg = yaml.safe_load((REPO / "config/model/tiny_random.yaml").read_text())
    out = tmp_path_factory.mktemp("models") / "tiny"
    models.materialise("tiny", cfg, out)
    return out


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """(model, tokenizer) of the tiny random Llama, fp32 on CPU."""
    import torch

    from grape import model_folder

    runtime.setup(threads=2)
    model = model_folder.load_model(tiny_model_dir, dtype=torch.float32, device="cpu")
    return model, model_folder.load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def tok():
    """The tiny test tokenizer (byte-level BPE trained on demo text)."""
    from grape.models.random_init import train_tiny_tokenizer

    return train_tiny_tokenizer(512)


@pytest.fixture(scope="session")
def model(tok):
    """A small random Llama on `tok`, fp32 (tests/helpers.py: tiny_llama)."""
    from helpers import tiny_llama

    runtime.setup(threads=2)
    return tiny_llama(tok)
