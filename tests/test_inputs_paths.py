"""A mistyped local path is a missing file, not a hub id: `file not found: <path>`, never "not in the cache ... run
prefetch" (a hub id is `owner/name`, with exactly one slash)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grape import config as gconfig
from grape import hub, pick, prefetch
from grape.data.source import Dataset
from grape.io import DataError

GRAPE = str(Path(sys.executable).parent / "grape")
FIELDS = {"instruction": "instruction", "response": "response"}


@pytest.mark.parametrize(
    ("path", "local"),
    [
        ("./pool.jsonl", True),
        ("../pools/x", True),
        ("~/pool", True),
        ("/data/pool", True),
        ("pool.parquet", True),
        ("my-org/pool.jsonl", True),
        ("data/pools/tulu", True),
        ("owner//name", True),
        ("dir\\pool", True),
        ("openbmb/UltraInteract_sft", False),
        ("meta-llama/Llama-3.1-8B", False),  # dots in a hub id are not a file suffix
        ("gpt2", False),
    ],
)
def test_what_looks_local(path, local):
    assert hub.looks_local(path) is local


@pytest.mark.parametrize("path", ["./missing/pool.jsonl", "pools/a/b", "pool.parquet"])
def test_a_missing_local_path_is_file_not_found(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"^file not found: {path} \(relative to {tmp_path}\)"):
        next(Dataset(path).rows())
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"^file not found: {tmp_path}/no-such-pool;"):
        next(Dataset("~/no-such-pool").rows())  # `~` is the home folder, as in a shell
    (tmp_path / "pool.jsonl").write_text(json.dumps({"a": 1}) + "\n")
    assert [row for _, row in Dataset("~/pool.jsonl").rows()] == [{"a": 1}]


def test_a_hub_id_is_still_looked_up_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"acme/pool.*not in the cache"):
        next(Dataset("acme/pool", experiment="x").rows())


def test_the_data_stage_says_file_not_found(tmp_path):
    params = json.dumps(
        {"seed": 0, "data": {"kind": "generic", "min_responses": 1, "path": "./pols/pool.jsonl", "fields": FIELDS}}
    )
    proc = subprocess.run([GRAPE, "data", "--params", params, "--train", "out/t.jsonl", "--test", "out/e.jsonl"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 2
    assert "grape data: error: file not found: ./pols/pool.jsonl" in proc.stderr, proc.stderr
    assert "prefetch" not in proc.stderr and not (tmp_path / "out" / "t.jsonl").exists()


def test_prefetch_refuses_a_missing_local_path_instead_of_fetching_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = gconfig.compose("demo", ["data.kind=generic", "data.path=./my_pool.jsonl"])
    with pytest.raises(FileNotFoundError, match=r"file not found: \./my_pool\.jsonl"):
        prefetch.needs(cfg)
    (tmp_path / "my_pool.jsonl").write_text("{}\n")
    assert prefetch.needs(cfg) == []  # there: read locally, nothing to fetch
    cfg = gconfig.compose("demo", ["data.kind=generic", "data.path=acme/pool"])
    assert [i["id"] for i in prefetch.needs(cfg)] == ["acme/pool"]


def test_pick_says_file_not_found_for_a_missing_target_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"file not found: \./models/mine"):
        pick.target_model("./models/mine", tmp_path)
