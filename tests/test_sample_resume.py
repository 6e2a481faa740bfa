"""Resumable sampling: a `grape sample` killed mid-way and rerun asks only for the chunks still missing and ends with
the same candidate file as an uninterrupted run; the cost is in its meta.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from grape import config as gconfig

GRAPE = str(Path(sys.executable).parent / "grape")


def _train(path: Path, n: int) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"q{i:03d}", "instruction": f"What is {i} + {i % 3}?", "answer": str(i + i % 3),
                                 "responses": [{"response": f"The answer is {i + i % 3}.", "source": "original"}]}) + "\n")  # fmt: skip
    return path


def _sample(params, model, train, out, wait=True):
    cmd = [GRAPE, "sample", "--params", json.dumps(params), "--model", str(model), "--train", str(train),
           "--output", str(out), "--missing", str(out) + ".missing"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(Path(f"{out}.meta.json").read_text())["counts"]


def test_a_killed_sampling_job_resumes_with_only_the_missing_chunks(tiny_model_dir, tmp_path):
    cfg = gconfig.compose("tiny", ["sample.batch_size=2", "sample.max_new_tokens=24"])
    params = {**gconfig.stage_params(cfg, "sample", source="tiny_a"), "threads": 1}
    train = _train(tmp_path / "train.jsonl", 16)  # 8 chunks of 2 instructions x 2 samples
    whole = _sample(params, tiny_model_dir, train, tmp_path / "whole.jsonl")
    assert whole["chunks_requested"] == 8 and whole["candidates"] == 32 and whole["missing"] == 0
    assert whole["cost"]["requests"] == 32 and whole["cost"]["completion_tokens"] > 0
    assert whole["cost"]["prompt_tokens"] > 16 * 5
    out = tmp_path / "killed.jsonl"
    proc = _sample(params, tiny_model_dir, train, out, wait=False)
    done = Path(f"{out}.partial.done")
    deadline = time.time() + 300
    while time.time() < deadline and (not done.exists() or len(done.read_text().splitlines()) < 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len(done.read_text().splitlines())
    assert 3 <= n_done < 8 and not out.exists()
    resumed = _sample(params, tiny_model_dir, train, out)
    assert resumed["chunks_resumed"] == n_done and resumed["chunks_requested"] == 8 - n_done
    assert resumed["cost"]["requests"] == (8 - n_done) * 4  # exactly the missing requests were made
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert not Path(f"{out}.partial").exists() and not done.exists()
    assert os.path.getsize(f"{out}.missing") == 0
