"""The `sample` stage: n candidate responses per train instruction from one source model.

Reads: `data/train.jsonl` (`grape.contracts.TRAIN`) and the source's model folder. Writes:
`candidates/<source>.jsonl` (`grape.contracts.CANDIDATE`), one row per instruction x sample, each recording
the sampling parameters that made it, and `logs/sample/<source>.missing.jsonl` (requests a backend gave up on, with
the error; empty when none: a log of the job, so it survives a failed job, which Snakemake cleans of outputs). The backend (`sample.backend`, a plugin of kind `sample_backend`) only generates text, chunk by chunk;
checkpointing and resume (`checkpoint.py`: a killed job asks only for the chunks still missing), candidate rows,
finish reasons, failures and cost (prompt and completion tokens, requests, failures, wall time: the stage's
meta.json, shown in the report) happen here, once for all. A new backend is a module with
`generate(params, model_dir, chunks)` taking `[(chunk index, rows)]` and yielding `(chunk index, results)` per
chunk, each result `{row, k, text, finish, prompt_tokens, completion_tokens}` or `{row, k, error}`; added to
`grape.plugins` (kind `sample_backend`, or entry point group `grape.sample_backends`).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Mapping

from grape.contracts import TRAIN
from grape.io import read_jsonl, write_jsonl

FINISH_REASONS = ("stop", "length", "eos")
CODE_VERSION = 1  # bump when a change to sampling alters the candidates written (checkpoints then start over)


def backend(name: str):
    """The module `sample.backend` names, with generate(params, model_dir, chunks) (`grape.plugins`)."""
    from grape import plugins

    return plugins.kind("sample_backend").get(name)


def sampling_record(params: Mapping) -> dict:
    """What made a candidate, stored in its row."""
    s = params["sample"]
    return {
        "temperature": s["temperature"],
        "top_p": s["top_p"],
        "top_k": s["top_k"],
        "max_new_tokens": s["max_new_tokens"],
        "n": s["n"],
        "seed": params["seed"],
        "prompt_format": params["prompt_format"],
    }


def run(params: Mapping, model_dir: str, train_path: str, out: str, missing_out: str | None = None) -> dict:
    from grape import resume
    from grape.sample import checkpoint

    t0 = time.time()
    source, s = params["source"], params["sample"]
    rows = read_jsonl(train_path, TRAIN, unique="id", non_empty="the train instructions written by the data stage")
    sampling = sampling_record(params)
    all_chunks = checkpoint.chunks(rows, s["batch_size"])
    # the partial files are this job's only if this job wrote them: same settings, train file, model content
    job = resume.Checkpoint(
        checkpoint.partial_paths(out),
        resume.identity("sample", params, {"train": train_path}, {"model": model_dir}, code=CODE_VERSION),
    )
    job.open()
    done, keep = checkpoint.load_done(out)
    todo = [(c, chunk) for c, chunk in all_chunks if c not in done]
    writer = checkpoint.Writer(out, keep)
    cost: Counter = Counter()
    failed_chunk_rows, missing = [], []
    try:
        for c, results in backend(s["backend"]).generate(params, model_dir, todo) if todo else ():
            good = []
            for r in results:
                cost["requests"] += 1
                if "error" in r:
                    missing.append({"instruction_id": r["row"]["id"], "sample_index": r["k"], "error": r["error"]})
                    continue
                cost["prompt_tokens"] += r.get("prompt_tokens", 0)
                cost["completion_tokens"] += r.get("completion_tokens", 0)
                good.append(_candidate(source, r, sampling))
            if len(good) == len(results):
                writer.chunk(c, good)
            else:  # asked again by the next run; this run's answers still reach this run's output
                failed_chunk_rows.extend({"chunk": c, **g} for g in good)
    finally:
        writer.close()
    out_rows = sorted([*checkpoint.read_partial(out), *failed_chunk_rows], key=lambda r: r["chunk"])  # stable
    for row in out_rows:
        row.pop("chunk", None)
    expected = len(rows) * s["n"]
    missing_path = missing_out or str(Path(out).with_name(Path(out).name + ".missing.jsonl"))
    write_jsonl(missing_path, missing)  # a log of the job (kept when it fails), not an output
    reasons = Counter(m["error"] for m in missing)
    for reason, count in reasons.most_common(5):
        print(f"sample {source}: {count} request(s) failed: {reason}", file=sys.stderr, flush=True)
    share = len(missing) / expected if expected else 0.0
    if share > s["allow_missing"]:
        first = reasons.most_common(1)[0][0] if reasons else "?"
        raise ValueError(
            f"{len(missing)} of {expected} requests to {source} failed after retries ({share:.1%} > "
            f"sample.allow_missing {s['allow_missing']}); most common reason: {first}; every failed request and "
            f"its reason: {missing_path}; rerun to ask for them again"
        )
    write_jsonl(out, out_rows)
    job.clear()
    finished = Counter({k: 0 for k in FINISH_REASONS})
    finished.update(r["finish"] for r in out_rows)
    return {
        "candidates": len(out_rows),
        **{f"finish_{k}": v for k, v in finished.items()},
        "missing": len(missing),
        "chunks": len(all_chunks),
        "chunks_resumed": len(done),
        "checkpoint_set_aside": job.status["set_aside"],
        "chunks_requested": len(todo),
        "cost": {
            "requests": cost["requests"],
            "prompt_tokens": cost["prompt_tokens"],
            "completion_tokens": cost["completion_tokens"],
            "failures": len(missing),
            "wall_seconds": round(time.time() - t0, 2),
        },
    }


def _candidate(source: str, r: Mapping, sampling: Mapping) -> dict:
    row, k = r["row"], r["k"]
    cand = {
        "candidate_id": f"{row['id']}:{source}:{k}",
        "instruction_id": row["id"],
        "instruction": row["instruction"],
        "response": r["text"],
        "source": source,
        "sample_index": k,
    }
    if row.get("answer") is not None:
        cand["answer"] = row["answer"]
    return {**cand, "finish": r["finish"], "sampling": sampling}
