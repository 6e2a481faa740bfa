"""`grape pick` is a practitioner's command: it downloads a hub target that is not in the cache unless the user's
environment says HF_HUB_OFFLINE=1, and then the way out it names is HF_HUB_OFFLINE=0, not `snakemake prefetch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grape import cli, hub, pick, runtime
from grape.data.source import Dataset
from grape.io import DataError

GRAPE = str(Path(sys.executable).parent / "grape")


@pytest.fixture
def online_env(monkeypatch):
    """The user's environment says nothing about offline mode (restored afterwards)."""
    for key in runtime.OFFLINE_ENV:
        monkeypatch.delenv(key, raising=False)


def test_set_offline_can_leave_hub_access_to_the_environment(online_env):
    runtime.set_offline(hub=False)
    assert not any(key in os.environ for key in runtime.HUB_KEYS) and not runtime.hub_offline()
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    runtime.set_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and runtime.hub_offline()


def test_grape_pick_does_not_force_offline(online_env, monkeypatch, tmp_path):
    """Needs cli.main to call `runtime.set_offline(hub=args.stage != "pick")` (other commands stay offline)."""
    seen = {}

    def fake_run(*args, **kwargs):
        seen.update({key: os.environ.get(key) for key in runtime.HUB_KEYS})
        return {}

    monkeypatch.setattr(pick, "run", fake_run)
    assert cli.main(["pick", "--pool", "p.jsonl", "--target", "acme/model", "--out", str(tmp_path / "o")]) == 0
    assert seen == {key: None for key in runtime.HUB_KEYS}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the user's own setting is kept
    cli.main(["pick", "--pool", "p.jsonl", "--target", "acme/model", "--out", str(tmp_path / "o")])
    assert seen["HF_HUB_OFFLINE"] == "1"


def test_pick_downloads_a_missing_hub_target_when_online(online_env, monkeypatch):
    fetched = []
    monkeypatch.setattr(hub, "model_available", lambda hub_id, revision: bool(fetched))
    monkeypatch.setattr(hub, "download_model", lambda hub_id, revision: fetched.append((hub_id, revision)))
    pick.fetch_model("meta-llama/Llama-3.1-8B", None)
    assert fetched == [("meta-llama/Llama-3.1-8B", None)]
    pick.fetch_model("meta-llama/Llama-3.1-8B", None)  # in the cache now: not again
    assert len(fetched) == 1


def test_pick_offline_with_a_missing_hub_target_names_hf_hub_offline_0(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"instruction": "Hi", "response": r}) + "\n" for r in ("Hello.", "Hey.")))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_cache")}
    proc = subprocess.run([GRAPE, "pick", "--pool", str(pool), "--target", "acme/never-fetched-7B", "--out", "o.jsonl"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "'acme/never-fetched-7B'" in proc.stderr and "HF_HUB_OFFLINE=0" in proc.stderr
    assert "snakemake prefetch" not in proc.stderr and not (tmp_path / "o.jsonl").exists()


def test_a_missing_hub_pool_outside_the_workflow_names_hf_hub_offline_0(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"'acme/pool'.*HF_HUB_OFFLINE=1 forbids.*HF_HUB_OFFLINE=0") as err:
        next(Dataset("acme/pool").rows())  # no experiment: `grape pick` or the API, not a workflow job
    assert "snakemake prefetch" not in str(err.value)
