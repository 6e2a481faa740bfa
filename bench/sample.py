"""Sampling throughput of the backends on one model and one set of prompts, side by side in one run (not a test).

    .venv/bin/python bench/sample.py                    # tiny random Llama (head dim 64), 64 prompts x 2 samples
    .venv/bin/python bench/sample.py --prompts 128 --max-new-tokens 64

Every method runs `grape sample` as the workflow runs it, on the same train file and settings (temperature 0.8,
n samples, `--max-new-tokens` with no stop strings, so every sample runs to the limit unless it hits EOS):
  hf          transformers generate, batched (`sample.batch_size` prompts per call), in .venv
  vllm        vLLM's offline engine (.venv-vllm)
  openai c=1  the openai backend at concurrency 1, against vLLM's OpenAI-compatible server on 127.0.0.1
  openai c=32 the same at concurrency 32
Reported: completion tokens per second (from the stage's cost counts, over the stage's wall time, so engine start
is included for hf and vllm but not the server's start), and ratios. Needs `make vllm-env`.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
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
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [str(VENV / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--host", "127.0.0.1", "--port", str(port), "--dtype", runtime.dtype_name(), "--max-model-len", "512",
             "--enforce-eager", "--served-model-name", "tiny"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
        )  # fmt: skip
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                    break
                except OSError:
                    time.sleep(1)
            for c in (1, 32):
                p = params("sample.backend=openai", "model@models.tiny_a=endpoint", "models.tiny_a.endpoint.model=tiny",
                           f"models.tiny_a.endpoint.base_url=http://127.0.0.1:{port}/v1",
                           "models.tiny_a.endpoint.api=completions", f"sample.concurrency={c}")  # fmt: skip
                rows.append((f"openai c={c}", run(str(Path(sys.executable).parent / "grape"), p, str(model), train,
                                                  d / f"openai{c}.jsonl")))  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"\nCPU: {runtime.cpu_summary()}; dtype {runtime.dtype_name()}")
    print(f"tiny random Llama (hidden 128, 2 layers), {args.prompts} prompts x {args.n} samples, "
          f"max_new_tokens {args.max_new_tokens}, {args.threads} threads\n")  # fmt: skip
    print(f"{'method':12} {'seconds':>8} {'compl tok':>10} {'tok/s':>8} {'x vllm':>7} {'x c=1':>7}")
    print("-" * 58)
    rate = {name: c["cost"]["completion_tokens"] / c["cost"]["wall_seconds"] for name, c in rows}
    for name, c in rows:
        print(f"{name:12} {c['cost']['wall_seconds']:>8.1f} {c['cost']['completion_tokens']:>10,} {rate[name]:>8,.0f} "
              f"{rate[name] / rate['vllm']:>7.2f} {rate[name] / rate.get('openai c=1', rate[name]):>7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
