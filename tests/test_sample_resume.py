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

import pytest

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


@pytest.mark.slow  # a real job killed and rerun, as a subprocess: end to end
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


def generate(params, model_dir, chunks):
    """A backend of the suite's own interface (not a library stand-in) whose requests for odd instructions fail
    after its retries: what a remote backend reports for prompts it gave up on."""
    for c, rows in chunks:
        out = []
        for row in rows:
            for k in range(params["sample"]["n"]):
                if int(row["id"][1:]) % 2:
                    out.append({"row": row, "k": k, "error": "HTTP 503 after 5 retries"})
                else:
                    out.append({"row": row, "k": k, "text": "It is 1.", "finish": "stop", "prompt_tokens": 7,
                                "completion_tokens": 4})  # fmt: skip
        yield c, out


def test_requests_that_still_fail_are_listed_counted_and_bounded(tmp_path, monkeypatch):
    import pytest

    from grape import plugins, sample

    monkeypatch.setitem(plugins.kind("sample_backend").builtin, "failing", __name__)
    cfg = gconfig.compose("tiny", ["sample.batch_size=2"])
    params = gconfig.stage_params(cfg, "sample", source="tiny_a")
    params["sample"] = {**params["sample"], "backend": "failing", "allow_missing": 0.6}
    train = _train(tmp_path / "train.jsonl", 6)
    counts = sample.run(params, "unused", str(train), str(tmp_path / "c.jsonl"), str(tmp_path / "m.jsonl"))
    missing = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert counts["missing"] == len(missing) == 6 and counts["candidates"] == 6 and counts["cost"]["failures"] == 6
    assert {(m["instruction_id"], m["sample_index"]) for m in missing} == {
        (f"q{i:03d}", k) for i in (1, 3, 5) for k in (0, 1)
    }
    assert all(m["error"] == "HTTP 503 after 5 retries" for m in missing)
    params["sample"]["allow_missing"] = 0.1
    with pytest.raises(ValueError, match=r"6 of 12 requests to tiny_a failed after retries"):
        sample.run(params, "unused", str(train), str(tmp_path / "d.jsonl"), str(tmp_path / "n.jsonl"))
    assert not (tmp_path / "d.jsonl").exists()


def test_a_torn_index_line_vouches_for_nothing_and_appends_stay_readable(tmp_path):
    from grape.sample import checkpoint

    out = str(tmp_path / "c.jsonl")
    w = checkpoint.Writer(out, 0)
    w.chunk(0, [{"candidate_id": "a"}])
    w.chunk(1, [{"candidate_id": "b"}])
    w.close()
    data, done = checkpoint.partial_paths(out)
    with open(data, "ab") as fh:
        fh.write(b'{"chunk": 2, "candidate_id": "c"}\n')  # chunk 2's rows, then killed while writing its index line
    with open(done, "a") as fh:
        fh.write('{"chunk": 2, "by')
    got, size = checkpoint.load_done(out)
    assert got == {0, 1} and [r["candidate_id"] for r in checkpoint.read_partial(out)] == ["a", "b"]
    w = checkpoint.Writer(out, size)
    w.chunk(2, [{"candidate_id": "c2"}])
    w.close()
    assert checkpoint.load_done(out)[0] == {0, 1, 2}
    assert [r["candidate_id"] for r in checkpoint.read_partial(out)] == ["a", "b", "c2"]


def test_top_k_reaches_generate(tiny_model_dir, tmp_path):
    """generate applies its own top_k=50 unless told: the hf backend passes sample.top_k, so top_k=1 is greedy (every
    sample of an instruction the same) and 0 is off (hot samples differ), as on the vllm and openai backends."""
    train = _train(tmp_path / "train.jsonl", 4)
    texts = {}
    for k in (1, 0):
        cfg = gconfig.compose("tiny", [f"sample.top_k={k}", "sample.temperature=3.0", "sample.n=3",
                                       "sample.max_new_tokens=8", "sample.stop=[]"])  # fmt: skip
        params = {**gconfig.stage_params(cfg, "sample", source="tiny_a"), "threads": 1}
        _sample(params, tiny_model_dir, train, tmp_path / f"k{k}.jsonl")
        rows = [json.loads(x) for x in (tmp_path / f"k{k}.jsonl").read_text().splitlines()]
        assert {r["sampling"]["top_k"] for r in rows} == {k}
        texts[k] = [{r["response"] for r in rows if r["instruction_id"] == q} for q in ("q000", "q001", "q002", "q003")]
    assert all(len(s) == 1 for s in texts[1])
    assert any(len(s) > 1 for s in texts[0])
