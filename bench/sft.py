"""SFT throughput: padded micro-batches vs padding-free ones, on the same model, examples and recipe (not a test).

    .venv/bin/python bench/sft.py                                  # CPU, SmolLM2-135M, 64 examples
    python bench/sft.py --random-shape llama3.2-3b --device cuda   # GPU: random 3B body, the paper's recipe
    .venv/bin/python bench/sft.py --random-shape tiny --examples 16 --max-length 128   # seconds (bench/gpu.sh --smoke)

Each mode runs `python -m grape sft` (the stage as the workflow runs it) in its own process on one deterministic
selection: prompts ~--prompt-words words, responses log-normal around --response-words words (the paper's pools:
prompts ~150 tokens, answers a few hundred with a tail), cut at --max-length. Modes:
  padded        TRL's padded batches of --batch-size examples (the paper's micro-batch: 2)
  padding-free  grape.sft.batches: micro-batches of about --micro-batch-tokens tokens, one sequence each
Both keep --global-batch examples per optimizer step. Reported from each run's train_log.json: the steady rate
(steps after the first), real tokens per second (no padding counted), TFLOP/s of model work (6 x params per token
+ causal attention) and MFU against the matmul peak the sft job measured in its own process, the attention,
gradient checkpointing (and why), the micro-batches per step, peak GPU memory, the final loss. Random-shape models
are built here with random weights and a tokenizer trained in a second (nothing is downloaded); only ratios within
one run compare, and the CPU flags or GPU name print beside the table.
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
SHAPES = {  # public configs' shapes; weights random
    "llama3.2-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                        num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=512, rope_theta=10000.0, tie_word_embeddings=True),
}  # fmt: skip


def make_selection(path: Path, n: int, prompt_words: int, response_words: int, max_words: int, seed: int = 0):
    from grape.template import Template

    rng = random.Random(seed)
    t = Template.from_config({"prompt": "Question: {instruction}\nAnswer:", "response": " {response}"})
    with open(path, "w") as fh:
        for i in range(n):
            q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(prompt_words // 2, prompt_words * 3 // 2))) + "?"
            k = max(1, min(max_words, int(rng.lognormvariate(0, 0.6) * response_words)))
            r = " ".join(rng.choice(WORDS) for _ in range(k))
            fh.write(json.dumps({"prompt": t.render_prompt(q), "completion": t.render_response(r),
                                 "instruction_id": f"q{i}", "candidate_id": f"q{i}:a:0", "source": "a",
                                 "mean_logprob": None, "messages": [{"role": "user", "content": q},
                                                                    {"role": "assistant", "content": r}]}) + "\n")  # fmt: skip


def random_model(shape: str, out: Path, device: str) -> str:
    """A model folder of `shape` with random weights (bf16 on a GPU, fp32 on CPU) and a tiny trained tokenizer: the
    model's vocabulary stays the public one, so the LM head costs what it costs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from grape.models.random_init import train_tiny_tokenizer

    tok = train_tiny_tokenizer(512)
    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=8192, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    del model
    return str(out)


def run_mode(model: str, selection: Path, out: Path, mode: str, args) -> dict:
    free = mode == "padding-free"
    sft = {"method": "full", "epochs": 1, "lr": 1e-5, "batch_size": args.batch_size, "global_batch": args.global_batch,
           "micro_batch_tokens": args.micro_batch_tokens if free else None, "max_length": args.max_length,
           "scheduler": "cosine", "warmup_ratio": 0.03, "optim": args.optim, "padding_free": free,
           "dtype": args.dtype, "gradient_checkpointing": "auto", "attn_implementation": "auto", "save_steps": 0,
           "keep_checkpoints": False, "accelerate": None, "report_to": "none"}  # fmt: skip
    params = {"seed": 0, "threads": args.threads, "target": "t", "arm": "bench", "sft": sft,
              "template": {"prompt": "Question: {instruction}\nAnswer:", "response": " {response}", "score_eos": False}}  # fmt: skip
    cmd = [sys.executable, "-m", "grape", "sft", "--params", json.dumps(params), "--model", model,
           "--selection", str(selection), "--output", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"grape sft ({mode}) failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "train_log.json").read_text())


def where(device: str) -> str:
    from grape import runtime

    if device == "cuda":
        import torch

        return f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU: {runtime.cpu_summary()}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "results/demo/models/smollm2"))
    ap.add_argument("--random-shape", choices=sorted(SHAPES), help="random weights of this shape instead of --model")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--modes", default="padded,padding-free")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--global-batch", type=int, default=16, help="examples per optimizer step")
    ap.add_argument("--batch-size", type=int, default=2, help="padded: examples per micro-batch (the paper: 2)")
    ap.add_argument("--micro-batch-tokens", type=int, default=8192, help="padding-free: tokens per micro-batch")
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--prompt-words", type=int, default=100)
    ap.add_argument("--response-words", type=int, default=250)
    ap.add_argument("--optim", default="adamw_torch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    args = ap.parse_args(argv)
    from grape import runtime

    device = runtime.device() if args.device == "auto" else args.device
    if device == "cuda" and args.optim == "adamw_torch":
        args.optim = "adamw_torch_fused"  # the paper configs' optimizer on a GPU
    with tempfile.TemporaryDirectory(prefix="grape-bench-sft-") as tmp:
        d = Path(tmp)
        if args.random_shape:
            model, name = random_model(args.random_shape, d / "model", device), f"random {args.random_shape}"
        else:
            from scale import tokenizer_folder

            model, name = tokenizer_folder(args.model), Path(args.model).name
        make_selection(d / "sel.jsonl", args.examples, args.prompt_words, args.response_words, args.max_length)
        rows = [(m, run_mode(model, d / "sel.jsonl", d / m, m, args)) for m in args.modes.split(",")]
    print(f"\n{where(device)}")
    c = rows[0][1]["counts"]
    print(
        f"SFT of {name}: {c['examples']} examples, {c['tokens']:,} tokens ({c['tokens'] / c['examples']:.0f} per "
        f"example, {c['truncated_examples']} cut at {args.max_length}), {c['steps']} steps of {args.global_batch} "
        f"examples, full FT, {args.optim}, dtype {rows[0][1]['recipe']['dtype']}; steady = steps after the first\n"
    )
    hdr = (
        f"{'mode':13} {'micro/step':>10} {'tok/micro':>9} {'attention':>17} {'ckpt':>5} {'tok/s':>9} "
        f"{'TFLOP/s':>8} {'peak':>7} {'MFU':>6} {'x padded':>8} {'GPU GiB':>8} {'last loss':>9}"
    )
    print(hdr + "\n" + "-" * len(hdr))
    base = rows[0][1]["throughput"].get("steady_tokens_per_s")
    for mode, log in rows:
        t, r, c = log["throughput"], log["recipe"], log["counts"]
        micro = r.get("micro_batches") or {"per_step": r["grad_accum"] * r["processes"], "mean_tokens": None}
        tps = t.get("steady_tokens_per_s") or 0.0
        per = micro["mean_tokens"] or c["tokens"] / c["examples"] * r["micro_batch"]
        mem = c.get("max_gpu_memory_gib")
        print(
            f"{mode:13} {micro['per_step']:>10} {per:>9.0f} {r['attn_implementation']:>17} "
            f"{'on' if r['gradient_checkpointing'] else 'off':>5} {tps:>9,.0f} {t.get('steady_tflops', 0):>8.2f} "
            f"{t.get('matmul_peak_tflops', 0):>7.1f} {100 * (t.get('steady_mfu') or 0):>5.1f}% "
            f"{tps / base if base else float('nan'):>7.2f}x {mem if mem is not None else '-':>8} "
            f"{c['last_loss']:>9.4f}"
        )
    print("\npeak: TFLOP/s of a square matmul in the run's dtype, measured by each sft job in its own process")
    for mode, log in rows:
        print(f"{mode}: gradient checkpointing: {log['recipe']['gradient_checkpointing_reason']}")


if __name__ == "__main__":
    main()
