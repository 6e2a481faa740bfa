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

from typing import Iterable, Mapping

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


def score_reference(model, tokenizer, template: Template, rows: Iterable[Mapping], max_length: int,
                    overlong: str = "skip", progress: bool = True) -> tuple[list[dict], list[dict]]:
    """One forward pass per candidate. Returns (scored rows, skipped rows with their reason)."""
    import torch

    scored, skipped = [], []
    rows = list(rows)
    for row in tqdm(rows, desc="score (reference)", unit="cand", disable=not progress):
        p, r = template.tokenize(tokenizer, row["instruction"], row["response"], add_eos=template.score_eos)
        r, status = fit_to_length(p, r, max_length, overlong)
        if r is None:
            skipped.append({"candidate_id": row["candidate_id"], "reason": status.split(":", 1)[1]})
            continue
        ids = torch.tensor([p + r], device=model.device)
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, len(p) - 1: -1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(p):, None]).squeeze(1)
        total = float(logp.double().sum())
        scored.append({"candidate_id": row["candidate_id"], "instruction_id": row["instruction_id"],
                       "source": row["source"], "n_tokens": len(r), "sum_logprob": total,
                       "mean_logprob": total / len(r), "truncated": status == "truncated"})
    return scored, skipped


def run(params: Mapping, model_dir: str, pool_path: str, out: str) -> dict:
    from grape import models, runtime

    runtime.setup(params["threads"])
    s = params["score"]
    template = Template.from_config(params["template"])
    pool = read_jsonl(pool_path, POOL_SPEC, unique="candidate_id")
    tok = models.load_tokenizer(model_dir)
    model = models.load_model(model_dir)
    scored, skipped = score_reference(model, tok, template, pool, s["max_length"], s["overlong"])
    write_jsonl(out, scored)
    reasons: dict[str, int] = {}
    for row in skipped:
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    return {"scored": len(scored), "truncated": sum(r["truncated"] for r in scored), "skipped": len(skipped),
            "skipped_by_reason": reasons, "skipped_ids": [r["candidate_id"] for r in skipped][:1000]}
