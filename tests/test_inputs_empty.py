"""An input without rows stops the import, naming the file, and leaves no output: the generic importer (`grape data`,
`grape pick`) and each dataset of a Tulu-3 mix (unless its config entry says `allow_empty: true`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grape import config as gconfig

GRAPE = str(Path(sys.executable).parent / "grape")
FIX = Path(__file__).resolve().parent / "fixtures" / "tulu3"
FIELDS = {"instruction": "instruction", "response": "response"}


def _grape(cwd, *args):
    return subprocess.run([GRAPE, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def _files(folder: Path) -> list[str]:
    """Every file under `folder` (hidden temporaries included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("content", ["", "\n  \n\t\n"], ids=["empty", "blank_lines"])
def test_generic_import_of_an_empty_file_names_it_and_writes_nothing(tmp_path, content):
    pool = tmp_path / "my_pool.jsonl"
    pool.write_text(content)
    params = json.dumps(
        {"seed": 0, "data": {"kind": "generic", "min_responses": 1, "path": str(pool), "fields": FIELDS}}
    )
    out = tmp_path / "out"
    proc = _grape(tmp_path, "data", "--params", params, "--train", f"{out}/train.jsonl", "--test", f"{out}/test.jsonl",
                  "--dropped", f"{out}/dropped.jsonl")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"{pool}: no rows: the file is empty or holds only blank lines" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _files(out) == []  # no 0-byte train.jsonl, no temporary or partition files


def test_an_import_that_keeps_no_rows_leaves_no_train_file(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"instruction": "Hi", "response": "  "}) + "\n")  # read, then dropped
    params = json.dumps(
        {"seed": 0, "data": {"kind": "generic", "min_responses": 1, "path": str(pool), "fields": FIELDS}}
    )
    proc = _grape(tmp_path, "data", "--params", params, "--train", "out/train.jsonl", "--test", "out/test.jsonl")
    assert proc.returncode == 2 and f"produced no train rows from {pool}" in proc.stderr, proc.stderr
    assert _files(tmp_path / "out") == []


def test_pick_with_an_empty_pool_names_it_and_writes_nothing(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n\n")
    proc = _grape(tmp_path, "pick", "--pool", str(pool), "--target", "tiny_random", "--out", "picked.jsonl",
                  "--workdir", "work")  # fmt: skip
    assert proc.returncode == 2 and f"{pool}: no rows" in proc.stderr, proc.stderr
    assert not (tmp_path / "picked.jsonl").exists() and not (tmp_path / "picked.jsonl.meta.json").exists()
    assert _files(tmp_path / "work") == []


def _tulu(tmp_path, sft_entry: dict) -> tuple[subprocess.CompletedProcess, Path]:
    datasets = [
        sft_entry,
        {"name": "pref", "path": str(FIX / "tulu-3-8b-preference-mixture.jsonl")},
        {"name": "olmo", "path": str(FIX / "olmo-2-7b-preference-mix.jsonl")},
    ]
    params = {"seed": 0, "data": {"kind": "tulu3", "datasets": datasets, "min_responses": 2, "limit": None}}
    out = tmp_path / "out"
    args = ("data", "--params", json.dumps(params), "--train", f"{out}/train.jsonl", "--test", f"{out}/test.jsonl")
    return _grape(tmp_path, *args), out


def test_an_empty_dataset_of_a_tulu_mix_is_an_error_naming_it(tmp_path):
    sft = tmp_path / "sft-mixture.jsonl"
    sft.write_text("")
    proc, out = _tulu(tmp_path, {"name": "sft", "path": str(sft)})
    assert proc.returncode == 2, proc.stderr
    assert f"{sft}: no rows: the file is empty or holds only blank lines (dataset 'sft' of the mix)" in proc.stderr
    assert "allow_empty: true" in proc.stderr
    assert _files(out) == []


def test_a_mix_may_lack_a_dataset_when_the_config_says_so(tmp_path):
    sft = tmp_path / "sft-mixture.jsonl"
    sft.write_text("")
    proc, out = _tulu(tmp_path, {"name": "sft", "path": str(sft), "allow_empty": True})
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "train.jsonl.meta.json").read_text())
    assert meta["counts"]["rows_read:sft"] == 0 and meta["counts"]["train"] >= 1
    assert [d["rows"] for d in meta["counts"]["info"]["datasets"]] == [0, 7, 3]


def test_the_schema_knows_allow_empty():
    cfg = gconfig.compose("tulu3", [])
    cfg["data"]["datasets"][0]["allow_empty"] = True
    gconfig.validate(cfg)
    cfg["data"]["datasets"][0]["allow_empty"] = "yes"
    with pytest.raises(gconfig.ConfigError, match=r"data\.datasets\.0\.allow_empty"):
        gconfig.validate(cfg)


def test_a_dataset_of_a_tulu_mix_whose_every_row_is_dropped_is_an_error(tmp_path):
    sft = tmp_path / "sft-mixture.jsonl"  # rows, but none ends with the assistant's turn: every one is dropped
    rows = [{"id": f"s{i}", "messages": [{"role": "user", "content": f"Say {i}."}], "source": "x"} for i in range(3)]
    sft.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc, out = _tulu(tmp_path, {"name": "sft", "path": str(sft)})
    assert proc.returncode == 2 and f"{sft}: no usable rows: all 3 rows of dataset 'sft'" in proc.stderr, proc.stderr
    assert _files(out) == []
