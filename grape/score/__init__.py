"""The `score` stage: each target model's log-probability of every candidate response in the pool.

Reads: `pool/pool.jsonl` (`grape.contracts.POOL`) and the target's model folder. Writes (per target, or per
shard of it): the scored rows (`SCORED`) and the skipped rows (`SKIPPED`), both sorted by candidate_id.

The stage is split by concern, and a backend only computes numbers:
- `stream`: the pool indexed once, then tokenized chunk by chunk in a producer thread (bounded memory);
- `tokens`: the overlong policy and groups of candidates by prompt;
- `formula`: the score of one candidate by one plain forward pass (the definition);
- `checkpoint`: the driver every backend runs under (chunks, `<output>.partial`, resume);
- `results`: the one place triples become rows; `shards`: scatter/gather of whole instructions;
- backends (plugins of kind `score_backend`, `grape.plugins`): `packed` (the engine: `packing`, `attention`,
  `packed`), `reference` (the plain loop), `vllm`. A backend module has `load(model_dir, options, max_length,
  seed)` returning an object with `name`, `fingerprint()` and `score(groups, pbar)`, and `CONTEXT_RESERVE`.
  No backend imports another backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

CODE_VERSION = 1  # bump when a change to scoring alters the scores written (checkpoints then start over)


def backend(name: str):
    """The module `score.backend` names (`grape.plugins`, kind `score_backend`)."""
    from grape import plugins

    return plugins.kind("score_backend").get(name)


def run(
    params: Mapping, model_dir: str, pool_path: str, out: str, skipped_out: str, shard: int = 0, shards: int = 1
) -> dict:
    """Score shard `shard` of `shards` (whole instructions, `grape.score.shards.shard_of`) of the pool.

    The pool is streamed (`grape.score.stream`): indexed once, then tokenized chunk by chunk beside the forward
    passes, so memory is bounded by the chunk size. Every backend checkpoints every `score.chunk_size` candidates
    to `<out>.partial`, so a killed job resumes where it stopped. A shard with no instruction is legitimate (a
    small pool, many shards) and is counted; it loads no model.
    """
    from grape import model_folder, resume, runtime
    from grape.io import write_jsonl
    from grape.score.checkpoint import score_file
    from grape.score.results import summary
    from grape.score.stream import index_file
    from grape.template import Template

    runtime.setup(params["threads"], seed=params["seed"])
    s = params["score"]
    template = Template.from_config(params["template"])
    impl = backend(s["backend"])
    dtype, dtype_why = runtime.choose_dtype(s["dtype"])
    options = {**s, "dtype": dtype}
    index = index_file(pool_path, s["chunk_size"], shard, shards)  # checks every row; an empty pool is an error
    # Never score past the model's trained context: `max_length` is capped by it.
    context = model_folder.context_length(model_dir)
    max_length = min(s["max_length"], context - impl.CONTEXT_RESERVE) if context else s["max_length"]
    partial = Path(f"{out}.partial")
    job = resume.Checkpoint(
        [partial],
        resume.identity(
            "score", params, {"pool": pool_path}, {"model": model_dir}, CODE_VERSION, {"shard": shard, "shards": shards}
        ),
    )
    job.open()
    tok = model_folder.load_tokenizer(model_dir) if index.ids else None
    try:
        scored, skipped = score_file(
            lambda: impl.load(model_dir, options, max_length, params["seed"]),
            tok,
            template,
            pool_path,
            max_length,
            s["overlong"],
            chunk_size=s["chunk_size"],
            index=index,
            partial_path=partial,
        )
        fid = None
        if dtype != "float32" and s["fidelity_sample"] and scored:
            fid = _fidelity(impl, model_dir, options, max_length, params, tok, template, index, scored)
    finally:
        index.close()
    write_jsonl(out, scored)
    write_jsonl(skipped_out, skipped)
    job.clear()
    return {
        "backend": s["backend"],
        "dtype": dtype,
        "dtype_reason": dtype_why,
        **({"dtype_fidelity": fid} if fid is not None else {}),
        "shard": shard,
        "shards": shards,
        "checkpoint_set_aside": job.status["set_aside"],
        "max_length": max_length,
        "instructions": index.instructions,
        "candidates": len(index.ids),
        **summary(scored, skipped),
    }


def _fidelity(impl, model_dir, options, max_length, params, tok, template, index, scored) -> dict:
    """The shard's first `score.fidelity_sample` instructions scored again in fp32 by the same backend, compared with
    this run's scores (`grape.score.fidelity`): the report shows what the faster dtype changed."""
    from grape.score import fidelity
    from grape.score.checkpoint import score_pool

    s = params["score"]
    n = s["fidelity_sample"]
    rows, wanted = [], set()
    for chunk in index.chunks:  # chunks hold whole instructions, in the canonical order
        for row in index.fetch(chunk):
            if row["instruction_id"] in wanted or len(wanted) < n:
                wanted.add(row["instruction_id"])
                rows.append(row)
        if len(wanted) >= n:
            break
    scorer = impl.load(model_dir, {**options, "dtype": "float32"}, max_length, params["seed"])
    ref, _ = score_pool(scorer, tok, template, rows, max_length, s["overlong"], progress=False)
    summary = fidelity.compare(
        {r["candidate_id"]: (r["instruction_id"], r["mean_logprob"]) for r in ref},
        {r["candidate_id"]: r["mean_logprob"] for r in scored if r["instruction_id"] in wanted},
        s["fidelity_tie"],
    )
    return {"dtype": options["dtype"], "reference_dtype": "float32", **summary}


def gather(shard_paths: list[str], skipped_paths: list[str], out: str, skipped_out: str) -> dict:
    """Join the shards of one target's scorer into `scores/<target>/<scorer>.jsonl` (+ the skipped list); same for any
    shard count."""
    from grape.contracts import SCORED, SKIPPED
    from grape.io import read_jsonl, write_jsonl
    from grape.score import fidelity
    from grape.score.results import summary
    from grape.score.shards import gather_shards

    parts = [
        (read_jsonl(a, SCORED, unique="candidate_id"), read_jsonl(b, SKIPPED, unique="candidate_id"))
        for a, b in zip(shard_paths, skipped_paths, strict=True)
    ]
    scored, skipped = gather_shards(parts)
    write_jsonl(out, scored)
    write_jsonl(skipped_out, skipped)
    # backend and dtype (with why, what it changed), time and set-aside checkpoints: as the shards' meta.json say
    how, fids, seconds, aside = {}, [], 0.0, {}
    for path in shard_paths:
        meta = Path(f"{path}.meta.json")
        if meta.exists():
            counts = json.loads(meta.read_text()).get("counts", {})
            how = how or {k: counts.get(k) for k in ("backend", "dtype", "dtype_reason")}
            fids.append(counts.get("dtype_fidelity"))
            seconds += float(counts.get("seconds") or 0.0)
            if counts.get("checkpoint_set_aside"):  # carried here: the shards' own records go with their files
                aside[Path(path).name] = counts["checkpoint_set_aside"]
    fid = fidelity.merge(fids)
    return {
        **how,
        **({"dtype_fidelity": fid} if fid else {}),
        "shards": len(parts),
        "shard_seconds": round(seconds, 2),  # the scoring's own time (the report's cost row), not the gather's
        "checkpoint_set_aside": aside or None,
        "empty_shards": sum(1 for a, b in parts if not a and not b),
        **summary(scored, skipped),
    }
