"""The model-free stages at a million pairs: import, verify, select, each through the real `grape` CLI.

    .venv/bin/python bench/scale.py --stages model-free                      # 350,000 x 3 = 1.05M pairs
    .venv/bin/python bench/scale.py --stages model-free --instructions 20000 # a quick look

Inputs are synthetic, in the stages' own schemas, written by `make_inputs` (not timed): the train split (350K
instructions, one original response each, a numeric answer), two sources' candidates (a fifth of them wrong, so the
filter has work), and, after verify, a score for every pool candidate. Each stage runs as its own process (`grape
<stage> --params ...`, as the workflow calls it, meta.json with input hashes included); wall time and that
process's peak RSS come from `os.wait4`. The selection of today's code is checked against the code of
`--baseline` (a git commit) on a 10K-pair sample of the same pool: same candidates, same order, same texts.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = {"prompt": "Question: {instruction}\nAnswer:", "response": " {response}", "score_eos": False}
SELECT = {"k": 1, "strongest_source": "model1", "original_sources": ["original"], "exclude_self": True}
ARMS = ("grape", "reverse", "random", "strongest", "all", "original")


def make_inputs(d: Path, n_instructions: int, n_candidates: int, text, seed: int = 0) -> None:
    """train.jsonl, candidates/model{k}.jsonl and pairs.jsonl (the same pairs, one per row, for the importer)."""
    import orjson

    rng = random.Random(seed)
    (d / "candidates").mkdir(parents=True, exist_ok=True)
    outs = [open(d / "candidates" / f"model{k}.jsonl", "wb") for k in range(1, n_candidates)]
    with open(d / "train.jsonl", "wb") as train, open(d / "pairs.jsonl", "wb") as pairs:
        for i in range(n_instructions):
            iid, instruction, answer = f"i{i:07d}", text(int(rng.lognormvariate(4.0, 0.4))), rng.randint(1, 999)
            body = text(min(3000, int(rng.lognormvariate(5.2, 0.7))))
            original = f"{body} The answer is {answer}."
            row = {"id": iid, "instruction": instruction, "responses": [{"response": original, "source": "original"}]}
            train.write(orjson.dumps({**row, "answer": str(answer), "check": "numeric"}) + b"\n")
            pairs.write(orjson.dumps({"instruction": instruction, "response": original, "source": "original"}) + b"\n")
            for k, fh in enumerate(outs, start=1):
                said = answer if rng.random() < 0.8 else answer + 1
                response = f"{text(min(3000, int(rng.lognormvariate(5.2, 0.7))))} The answer is {said}."
                cand = {"candidate_id": f"{iid}:model{k}:0", "instruction_id": iid, "instruction": instruction,
                        "response": response, "source": f"model{k}", "sample_index": 0, "answer": str(answer),
                        "finish": "stop"}  # fmt: skip
                fh.write(orjson.dumps(cand) + b"\n")
                pairs.write(
                    orjson.dumps({"instruction": instruction, "response": response, "source": f"model{k}"}) + b"\n"
                )
    for fh in outs:
        fh.close()


def make_scores(pool: Path, out: Path, seed: int = 0) -> None:
    import orjson

    rng = random.Random(seed)
    with open(pool, "rb") as src, open(out, "wb") as dst:
        for line in src:
            row = orjson.loads(line)
            n = rng.randint(20, 900)
            mean = -rng.random() * 3
            dst.write(orjson.dumps({"candidate_id": row["candidate_id"], "instruction_id": row["instruction_id"],
                                    "source": row["source"], "n_tokens": n, "sum_logprob": mean * n,
                                    "mean_logprob": mean, "truncated": False}) + b"\n")  # fmt: skip


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one child process; raises with its stderr when it fails."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status):
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{err.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def grape(stage: str, params: dict, *args: str) -> list[str]:
    """The stage as the workflow runs it, with every core of this machine (`--threads`, as a rule's `threads:`)."""
    cores = str(len(os.sched_getaffinity(0)))
    return [
        str(Path(sys.executable).parent / "grape"),
        stage,
        "--params",
        json.dumps(params),
        "--threads",
        cores,
        *args,
    ]


def run_stages(d: Path, n_candidates: int) -> list[tuple[str, float, float, str]]:
    sources = [f"model{k}" for k in range(1, n_candidates)]
    data = {"seed": 0, "data": {"kind": "generic", "path": str(d / "pairs.jsonl"), "min_responses": 1,
                                "fields": {"instruction": "instruction", "response": "response", "source": "source"}}}  # fmt: skip
    rows = []
    wall, rss = timed(grape("data", data, "--train", str(d / "imported.jsonl"), "--test", str(d / "t.jsonl")))
    rows.append(("import (generic)", wall, rss, "1 pair per row -> grouped by instruction, train.jsonl"))
    cands = [str(d / "candidates" / f"{s}.jsonl") for s in sources]
    verify = {"verify": {"drop_incorrect": True, "unverifiable": "error"}, "sources": sources}
    pool = str(d / "pool.jsonl")
    wall, rss = timed(grape("verify", verify, "--train", str(d / "train.jsonl"), "--candidates", *cands,
                            "--output", pool, "--counts", str(d / "counts.json")))  # fmt: skip
    kept = sum(r["kept"] for r in json.loads((d / "counts.json").read_text()))
    rows.append(("verify", wall, rss, f"{kept:,} pairs kept in the pool"))
    make_scores(Path(pool), d / "scores.jsonl")
    for arm in ("grape", "all"):
        params = {"seed": 0, "arm": arm, "target": "t", "select": SELECT, "template": TEMPLATE}
        scores = ["--scores", str(d / "scores.jsonl")] if arm == "grape" else []
        out = d / f"select_{arm}.jsonl"
        wall, rss = timed(grape("select", params, "--pool", pool, *scores, "--output", str(out)))
        with open(out, "rb") as fh:
            n = sum(1 for _ in fh)
        rows.append((f"select {arm}", wall, rss, f"{n:,} examples written (prompt/completion and messages)"))
    return rows


def baseline_module(commit: str, tmp: Path):
    """`grape.select` as it was at `commit`, importable beside today's package."""
    import importlib.util

    src = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:grape/select.py"], capture_output=True, text=True)
    if src.returncode:
        raise SystemExit(f"git show {commit}:grape/select.py failed: {src.stderr}")
    path = tmp / f"select_{commit[:8]}.py"
    path.write_text(src.stdout)
    spec = importlib.util.spec_from_file_location(f"select_{commit[:8]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def same_selection_as_baseline(d: Path, commit: str, pairs: int = 10_000) -> list[str]:
    """Every arm on the first `pairs` pool rows' instructions, today's code vs `commit`'s: lines of the comparison."""
    from grape import select
    from grape.io import read_jsonl

    pool, scores = d / "pool.jsonl", d / "scores.jsonl"
    keep: set[str] = set()
    with open(pool, "rb") as src:
        for n, line in enumerate(src):
            if n >= pairs:
                break
            keep.add(json.loads(line)["instruction_id"])
    sample, sample_scores = d / "sample_pool.jsonl", d / "sample_scores.jsonl"
    for path, out in ((pool, sample), (scores, sample_scores)):
        with open(path, "rb") as src, open(out, "wb") as dst:
            dst.writelines(line for line in src if json.loads(line)["instruction_id"] in keep)
    old = baseline_module(commit, d)
    lines = []
    for arm in ARMS:
        params = {"seed": 0, "arm": arm, "target": "t", "select": SELECT, "template": TEMPLATE}
        sc = str(sample_scores) if arm in ("grape", "reverse") else None
        old.run({**params, "select": {"k": 1, "strongest_source": "model1"}}, str(sample), sc, str(d / "old.jsonl"))
        select.run(params, str(sample), sc, str(d / "new.jsonl"))
        fields = ("candidate_id", "prompt", "completion", "source", "mean_logprob")
        a = [(*(r[f] for f in fields), r["instruction"], r["response"]) for r in read_jsonl(d / "old.jsonl")]
        b = [(*(r[f] for f in fields), *(m["content"] for m in r["messages"])) for r in read_jsonl(d / "new.jsonl")]
        lines.append(f"{arm:9} {len(b):>6,} examples  {'identical' if a == b else 'DIFFERENT'} to {commit[:8]}")
        if a != b:
            raise SystemExit("\n".join(lines))
    return lines
