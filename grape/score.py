"""The `score` stage: each target model's log-probability of every candidate response.

For a candidate, with prompt/response token ids from `grape.template.Template.tokenize`:
  sum_logprob  = sum over response tokens t of log p(t | prompt, response tokens before t)
  mean_logprob = sum_logprob / n_tokens          (the paper's length normalisation; = -log PPL)
Log-softmax runs in fp32 whatever the model dtype.

`score_reference` is the plain per-example loop: obviously correct, and the yardstick the fast
engine is tested against. Candidates longer than `max_length` tokens are skipped and counted
(`overlong: skip`) or have their response cut to fit and are flagged (`overlong: truncate`); a prompt
that alone fills the context is always skipped and counted.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping, Sequence

from tqdm import tqdm

from grape.io import read_jsonl, write_jsonl
from grape.template import Template
from grape.verify import POOL_SPEC


def fit_to_length(prompt_ids: list[int], response_ids: list[int], max_length: int, overlong: str):
    """Apply the overlong policy. Returns (response_ids, status) with status ok|truncated|skip:<reason>."""
    if len(prompt_ids) >= max_length:
        return None, "skip:prompt_over_context"
    if not response_ids:
        return None, "skip:empty_response"
    if len(prompt_ids) + len(response_ids) <= max_length:
        return response_ids, "ok"
    if overlong == "truncate":
        return response_ids[: max_length - len(prompt_ids)], "truncated"
    return None, "skip:over_context"


def reference_logprob_ids(model, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> float:
    """sum log p(response | prompt) by one plain forward pass: full logits, fp32 log_softmax, fp64 sum."""
    import torch

    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=model.device)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1: -1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt_ids):, None]).squeeze(1)
    return float(logp.double().sum())


def score_reference(model, tokenizer, template: Template, rows: Iterable[Mapping], max_length: int,
                    overlong: str = "skip", progress: bool = True) -> tuple[list[dict], list[dict]]:
    """One forward pass per candidate. Returns (scored rows, skipped rows with their reason)."""
    scored, skipped = [], []
    rows = list(rows)
    for row in tqdm(rows, desc="score (reference)", unit="cand", disable=not progress):
        p, r = template.tokenize(tokenizer, row["instruction"], row["response"], add_eos=template.score_eos)
        r, status = fit_to_length(p, r, max_length, overlong)
        if r is None:
            skipped.append({"candidate_id": row["candidate_id"], "reason": status.split(":", 1)[1]})
            continue
        total = reference_logprob_ids(model, p, r)
        scored.append({"candidate_id": row["candidate_id"], "instruction_id": row["instruction_id"],
                       "source": row["source"], "n_tokens": len(r), "sum_logprob": total,
                       "mean_logprob": total / len(r), "truncated": status == "truncated"})
    return scored, skipped


def _reasons(skipped: list[dict]) -> dict[str, int]:
    return dict(Counter(row["reason"] for row in skipped))


def run(params: Mapping, model_dir: str, pool_path: str, out: str, skipped_out: str,
        shard: int = 0, shards: int = 1) -> dict:
    """Score shard `shard` of `shards` (whole instructions, `grape.score_engine.shard_of`) of the pool.

    backend `hf` is the packed engine (`grape.score_engine`); it checkpoints every `chunk_size` candidates to
    `<out>.partial`, so a killed job resumes where it stopped. `reference` is the plain loop; `vllm` uses
    vLLM's prompt log-probs. All three write the same rows (sorted by candidate_id).
    """
    from pathlib import Path

    from grape import models, runtime, score_engine

    runtime.setup(params["threads"], seed=params["seed"])
    s = params["score"]
    template = Template.from_config(params["template"])
    pool = read_jsonl(pool_path, POOL_SPEC, unique="candidate_id")
    rows = score_engine.shard_rows(pool, shard, shards)
    tok = models.load_tokenizer(model_dir)
    partial = Path(f"{out}.partial")
    # Never score past the model's trained context: `max_length` is capped by it (vLLM needs one slot more).
    context = models.context_length(model_dir)
    max_length = min(s["max_length"], context - (s["backend"] == "vllm")) if context else s["max_length"]
    if s["backend"] == "vllm":
        from grape.score_vllm import score_vllm

        scored, skipped = score_vllm(model_dir, tok, template, rows, max_length, s["overlong"], seed=params["seed"])
    else:
        model = models.load_model(model_dir)
        if s["backend"] == "reference":
            scored, skipped = score_reference(model, tok, template, rows, max_length, s["overlong"])
            scored.sort(key=lambda r: r["candidate_id"])
            skipped.sort(key=lambda r: r["candidate_id"])
        else:
            scored, skipped = score_engine.score_packed_resumable(
                model, tok, template, rows, max_length, s["overlong"], partial_path=partial,
                chunk_size=s["chunk_size"], token_budget=s["token_budget"], head_chunk=s["head_chunk"],
                fingerprint_extra={"model": str(Path(model_dir).resolve()), "dtype": str(model.dtype)})
    write_jsonl(out, scored)
    write_jsonl(skipped_out, skipped)
    partial.unlink(missing_ok=True)
    return {"backend": s["backend"], "shard": shard, "shards": shards, "max_length": max_length, "candidates": len(rows),
            "scored": len(scored), "truncated": sum(r["truncated"] for r in scored), "skipped": len(skipped),
            "skipped_by_reason": _reasons(skipped)}


SKIPPED_SPEC = {"candidate_id": ((str,), True, True), "reason": ((str,), True, True)}
SCORED_SPEC = {"candidate_id": ((str,), True, True), "instruction_id": ((str,), True, True),
               "n_tokens": ((int,), True, False), "sum_logprob": ((float, int), True, False),
               "mean_logprob": ((float, int), True, False)}


def gather(shard_paths: list[str], skipped_paths: list[str], out: str, skipped_out: str) -> dict:
    """Join the shards of one target into `scores/<target>.jsonl` (+ the skipped list); same result for any shard count."""
    from grape.score_engine import gather_shards

    parts = [(read_jsonl(a, SCORED_SPEC, unique="candidate_id"), read_jsonl(b, SKIPPED_SPEC, unique="candidate_id"))
             for a, b in zip(shard_paths, skipped_paths, strict=True)]
    scored, skipped = gather_shards(parts)
    write_jsonl(out, scored)
    write_jsonl(skipped_out, skipped)
    return {"shards": len(parts), "scored": len(scored), "truncated": sum(bool(r.get("truncated")) for r in scored),
            "skipped": len(skipped), "skipped_by_reason": _reasons(skipped)}
