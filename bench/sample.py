"""Sampling throughput of the backends on one model and one set of prompts, side by side in one run (not a test).

    .venv/bin/python bench/sample.py                    # tiny random Llama (head dim 64), 256 prompts x 2 samples
    .venv/bin/python bench/sample.py --prompts 128 --max-new-tokens 64

Every method runs `grape sample` as the workflow runs it, on the same train file and settings (temperature 0.8,
n samples, `--max-new-tokens` with no stop strings, so every sample runs to the limit unless it hits EOS):
  hf          transformers generate, batched (`sample.batch_size` prompts per call), in .venv
  vllm        vLLM's offline engine (.venv-vllm)
  openai c=1  the openai backend at concurrency 1, against vLLM's OpenAI-compatible server on 127.0.0.1, with
              --prompts-per-request instructions per completions request
  openai c=32 the same at concurrency 32
  c=32 p=1    concurrency 32, one instruction per request (per-instruction seeds, the backend's default)
  vllm engine LLM.generate alone on the same prompts (no engine start, after a warm-up): the offline engine's rate
Reported: completion tokens per second (the stage's cost counts over its wall time, so model loading and engine
start are included for hf and vllm, not the server's start), and ratios to the engine alone and to concurrency 1.
Needs `make vllm-env`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VENV = REPO / ".venv-vllm"
ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}


def run(grape: str, params: dict, model: str, train: Path, out: Path) -> dict:
    cmd = [grape, "sample", "--params", json.dumps(params), "--model", model, "--train", str(train),
           "--output", str(out), "--missing", f"{out}.missing"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:2])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(Path(f"{out}.meta.json").read_text())["counts"]


ENGINE = """
import json, sys, time
from vllm import LLM, SamplingParams
model, train, s, dtype = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
prompts = ["Question: " + json.loads(l)["instruction"] + "\\nAnswer:" for l in open(train)]
llm = LLM(model=model, dtype=dtype, max_model_len=512, enforce_eager=True, seed=0, enable_chunked_prefill=False)
sp = SamplingParams(n=s["n"], temperature=s["temperature"], top_p=s["top_p"], top_k=s["top_k"] or -1,
                    max_tokens=s["max_new_tokens"], seed=0)
llm.generate(prompts[:2], sp, use_tqdm=False)
t = time.perf_counter()
outs = llm.generate(prompts, sp, use_tqdm=False)
dt = time.perf_counter() - t
print("RESULT", json.dumps({"seconds": dt, "tokens": sum(len(o.token_ids) for r in outs for o in r.outputs)}))
"""


def engine_only(model: Path, train: Path, sample: dict) -> dict:
    """vLLM's LLM.generate on the same prompts, timed alone (engine start and a warm-up excluded): the offline
    engine's own rate, what the HTTP path is compared with, with the backends' sampling settings (`sample`)."""
    from grape import runtime

    cmd = [str(VENV / "bin" / "python"), "-c", ENGINE, str(model), str(train), json.dumps(sample),
           runtime.dtype_name()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"vllm engine failed:\n{proc.stderr[-3000:]}")
    r = json.loads(line[7:])
    return {"cost": {"wall_seconds": r["seconds"], "completion_tokens": r["tokens"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts-per-request", type=int, default=2)
    args = ap.parse_args()
    if not (VENV / "bin" / "grape").exists():
        raise SystemExit("needs .venv-vllm: run `make vllm-env` first")
    import yaml

    from grape import config as gconfig
    from grape import models, runtime

    with tempfile.TemporaryDirectory(prefix="grape-bench-sample-") as tmp:
        d = Path(tmp)
        model = d / "model"
        models.materialise("tiny", yaml.safe_load((REPO / "config/model/tiny_random.yaml").read_text()), model)
        train = d / "train.jsonl"
        train.write_text("".join(json.dumps({"id": f"q{i}", "instruction": f"What is {i} plus {i % 7} apples?",
                                             "responses": [{"response": "x", "source": "original"}]}) + "\n"
                                 for i in range(args.prompts)))  # fmt: skip
        base = ["sample.stop=[]", f"sample.n={args.n}", f"sample.max_new_tokens={args.max_new_tokens}",
                "sample.batch_size=32"]  # fmt: skip

        def params(*extra):
            cfg = gconfig.compose("tiny", [*base, *extra])
            return {**gconfig.stage_params(cfg, "sample", source="tiny_a"), "threads": args.threads}

        rows = [("hf", run(str(Path(sys.executable).parent / "grape"), params(), str(model), train, d / "hf.jsonl"))]
        rows.append(("vllm", run(str(VENV / "bin" / "grape"), params("sample.backend=vllm"), str(model), train,
                                 d / "vllm.jsonl")))  # fmt: skip
        rows.append(("vllm engine", engine_only(model, train, params()["sample"])))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [str(VENV / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--host", "127.0.0.1", "--port", str(port), "--dtype", runtime.dtype_name(), "--max-model-len", "512",
             "--enforce-eager", "--served-model-name", "tiny", "--no-enable-chunked-prefill"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
        )  # fmt: skip
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                    break
                except OSError:
                    time.sleep(1)
            runs = (("openai c=1", 1, args.prompts_per_request), ("openai c=32", 32, args.prompts_per_request),
                    ("c=32 p=1", 32, 1))  # fmt: skip
            for name, c, per in runs:
                p = params("sample.backend=openai", "model@models.tiny_a=endpoint", "models.tiny_a.endpoint.model=tiny",
                           f"models.tiny_a.endpoint.base_url=http://127.0.0.1:{port}/v1",
                           "models.tiny_a.endpoint.api=completions", f"sample.concurrency={c}", f"sample.prompts_per_request={per}")  # fmt: skip
                rows.append((name, run(str(Path(sys.executable).parent / "grape"), p, str(model), train,
                                                  d / f"openai{c}-{per}.jsonl")))  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"\nCPU: {runtime.cpu_summary()}; dtype {runtime.dtype_name()}")
    print(f"tiny random Llama (hidden 128, 2 layers), {args.prompts} prompts x {args.n} samples, "
          f"max_new_tokens {args.max_new_tokens}, {args.threads} threads, "
          f"openai: {args.prompts_per_request} prompts per request unless p= says otherwise\n")  # fmt: skip
    print(f"{'method':12} {'seconds':>8} {'compl tok':>10} {'tok/s':>8} {'x engine':>8} {'x c=1':>7}")
    print("-" * 58)
    rate = {name: c["cost"]["completion_tokens"] / c["cost"]["wall_seconds"] for name, c in rows}
    for name, c in rows:
        print(f"{name:12} {c['cost']['wall_seconds']:>8.1f} {c['cost']['completion_tokens']:>10,} {rate[name]:>8,.0f} "
              f"{rate[name] / rate['vllm engine']:>8.2f} {rate[name] / rate.get('openai c=1', rate[name]):>7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
