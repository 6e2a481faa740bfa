"""A provenance record describes the output beside it, or is gone: `write_meta` records a file output's own sha256
(`stale_meta` tells a record that outlived or no longer matches its output), a stage's start removes the records of
the outputs it is about to write (`clear_meta`), and `grape pick` writes one beside its selection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from grape import provenance
from grape.io import read_jsonl

GRAPE = str(Path(sys.executable).parent / "grape")


def test_write_meta_records_the_output_sha256_and_a_stale_record_is_told_apart(tmp_path):
    out = tmp_path / "selection.jsonl"
    out.write_text('{"a": 1}\n')
    record = provenance.write_meta(out, "select", {"k": 1})
    meta = json.loads(record.read_text())
    assert meta["output"] == {"path": str(out), "sha256": provenance.sha256_path(out)}
    assert provenance.stale_meta(out) is None
    out.write_text('{"a": 2}\n')
    assert "has changed since" in provenance.stale_meta(out)
    out.unlink()
    assert "does not exist" in provenance.stale_meta(out)
    folder = tmp_path / "model"
    folder.mkdir()
    assert "output" not in json.loads(provenance.write_meta(folder, "model", {}).read_text())  # inside the folder


def test_clear_meta_removes_the_records_of_the_outputs_a_stage_will_write(tmp_path):
    a, b = tmp_path / "scores.jsonl", tmp_path / "scores.skipped.jsonl"
    for out in (a, b):
        out.write_text("")
        provenance.write_meta(out, "score", {})
    out.unlink()  # a removed output whose record was left behind
    other = tmp_path / "other.jsonl"
    other.write_text("")
    provenance.write_meta(other, "select", {})
    assert provenance.clear_meta([str(a), b, None]) == [provenance.meta_path(a), provenance.meta_path(b)]
    assert not provenance.meta_path(a).exists() and not provenance.meta_path(b).exists()
    assert provenance.meta_path(other).exists() and a.exists()  # outputs themselves and other records untouched
    assert provenance.clear_meta(str(a)) == []


def test_pick_writes_provenance_and_a_failed_rerun_leaves_no_stale_record(tmp_path):
    pool = tmp_path / "pool.jsonl"
    rows = [("What is 2+2?", "4", "a"), ("What is 2+2?", "It is four.", "b"), ("Name a colour.", "Red.", "a"),
            ("Name a colour.", "Blue, I think.", "b")]  # fmt: skip
    pool.write_text("".join(json.dumps({"instruction": i, "response": r, "source": s}) + "\n" for i, r, s in rows))
    args = [GRAPE, "pick", "--pool", str(pool), "--target", "tiny_random", "--out", "picked.jsonl"]
    proc = subprocess.run([*args, "score.max_length=256"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "picked.jsonl"
    assert len(read_jsonl(out)) == 2
    meta = json.loads((tmp_path / "picked.jsonl.meta.json").read_text())
    assert meta["stage"] == "pick" and meta["output"]["sha256"] == provenance.sha256_path(out)
    assert meta["inputs"]["pool"] == {"path": str(pool), "sha256": provenance.sha256_path(pool)}
    assert "sha256" in meta["inputs"]["pool_scored"]  # the pool as scored (imported and joined)
    p = meta["params"]
    assert p["target"] == "tiny_random" and p["target_model"]["model"]["kind"] == "random"
    assert len(p["target_model"]["sha256"]["model.safetensors"]) == 64
    assert p["overrides"] == ["score.max_length=256"] and p["score"]["max_length"] == 256
    assert p["select"]["k"] == 1 and p["template"]["prompt"].startswith("Question:")
    assert meta["counts"]["select"]["examples"] == 2
    pool.write_text("")  # the rerun fails: the record of the first run goes, the output stays as it was
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 2 and f"{pool}: no rows" in proc.stderr
    assert not (tmp_path / "picked.jsonl.meta.json").exists() and out.exists()
