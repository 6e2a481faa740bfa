"""SFT throughput: padded micro-batches vs padding-free ones, on the same model, examples and recipe (not a test).

    .venv/bin/python bench/sft.py                     # SmolLM2-135M, 64 examples, log-normal response lengths
    .venv/bin/python bench/sft.py --examples 32 --dtype float32

Each mode runs `grape sft` (the stage as the workflow runs it) in its own process on one deterministic selection:
prompts ~40 tokens, responses log-normal (median ~150 tokens, tail to ~900), like the spread of the paper's
pools, cut at --max-length. Reported: the trainer's own wall time (`train_seconds` in train_log.json, model
loading and saving excluded), real tokens per second (prompt + response tokens, no padding counted), and the
ratio. Full fine-tuning, micro-batch 8, global batch 8, 1 epoch; dtype as `sft.dtype` resolves on this machine
(printed, with the CPU flags). Ratios are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = "the answer is so we add then multiply each step gives total apples code returns value list".split()


def make_selection(path: Path, n: int, seed: int = 0) -> None:
    from grape.template import Template

    rng = random.Random(seed)
    t = Template.from_config({"prompt": "Question: {instruction}\nAnswer:", "response": " {response}"})
    with open(path, "w") as fh:
        for i in range(n):
            q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 40))) + "?"
            r = " ".join(rng.choice(WORDS) for _ in range(min(900, int(rng.lognormvariate(5.0, 0.6)))))
            fh.write(json.dumps({"prompt": t.render_prompt(q), "completion": t.render_response(r),
                                 "instruction_id": f"q{i}", "candidate_id": f"q{i}:a:0", "source": "a",
                                 "mean_logprob": None, "messages": [{"role": "user", "content": q},
                                                                    {"role": "assistant", "content": r}]}) + "\n")  # fmt: skip


def run_mode(model: str, selection: Path, out: Path, padding_free: bool, args) -> dict:
    sft = {"method": "full", "epochs": 1, "lr": 1e-5, "batch_size": 8, "global_batch": 8, "max_length": args.max_length,
           "scheduler": "constant", "warmup_ratio": 0.0, "padding_free": padding_free, "dtype": args.dtype,
           "gradient_checkpointing": False, "attn_implementation": "auto", "save_steps": 0}  # fmt: skip
    params = {"seed": 0, "threads": args.threads, "target": "t", "arm": "bench", "sft": sft,
              "template": {"prompt": "Question: {instruction}\nAnswer:", "response": " {response}", "score_eos": False}}  # fmt: skip
    cmd = [str(Path(sys.executable).parent / "grape"), "sft", "--params", json.dumps(params), "--model", model,
           "--selection", str(selection), "--output", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"grape sft failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "train_log.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "results/demo/models/smollm2"))
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    args = ap.parse_args()
    from scale import tokenizer_folder

    from grape import runtime

    tokenizer_folder(args.model)
    with tempfile.TemporaryDirectory(prefix="grape-bench-sft-") as tmp:
        d = Path(tmp)
        make_selection(d / "sel.jsonl", args.examples)
        rows = []
        for name, free in (("padded", False), ("padding-free", True)):
            log = run_mode(args.model, d / "sel.jsonl", d / name, free, args)
            rows.append((name, log))
    print(f"\nCPU: {runtime.cpu_summary()}")
    c, plan = rows[0][1]["counts"], rows[0][1]["recipe"]
    print(
        f"SFT of {Path(args.model).name}: {c['examples']} examples, {c['tokens']:,} tokens "
        f"({c['tokens'] / c['examples']:.0f} per example, {c['truncated_examples']} cut at {args.max_length}), "
        f"{c['steps']} steps of micro 8 = global 8, dtype {plan['dtype']} ({plan['dtype_reason']}), "
        f"attention {plan['attn_implementation']}, {args.threads} threads\n"
    )
    print(f"{'mode':14} {'train s':>9} {'tokens/s':>10} {'x padded':>9} {'final loss':>11}")
    print("-" * 58)
    base = rows[0][1]["counts"]["tokens_per_s"]
    for name, log in rows:
        c = log["counts"]
        print(f"{name:14} {c['train_seconds']:>9.1f} {c['tokens_per_s']:>10,.0f} {c['tokens_per_s'] / base:>8.2f}x "
              f"{c['last_loss']:>11.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
