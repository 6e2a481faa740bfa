"""`score.backend: packed` (default): the fast, exact engine. Shares each prompt, runs the LM head on response
positions only.

It computes the numbers of `grape.score.formula` (one plain forward pass per candidate) and differs only by
floating-point rounding; docs/scoring.md has the description and measurements. The plan (which candidates share
a pass) is `grape.score.packing`, the attention that keeps responses apart is `grape.score.attention`. Here: one
forward pass per batch through the base model for hidden states, then the LM head only on the positions that
predict a response token (the prompt's last position, shared, and every fed response token), `head_chunk`
positions at a time with log_softmax in fp32, so a [tokens, vocab] logits tensor is never built. The first
batch of a run is re-scored candidate by candidate (`self_check`): a model whose attention the engine gets
wrong fails loudly instead of ranking by wrong numbers.
"""

from __future__ import annotations

import bisect
from typing import Iterable, Mapping, Sequence

from tqdm import tqdm

from grape.score import attention
from grape.score.formula import reference_logprob_ids
from grape.score.packing import batch_plan, resolve_attention, row_length
from grape.score.tokens import Group, group_examples

SUPPORTED_ATTENTION = ("sdpa", "eager")
CONTEXT_RESERVE = 0  # positions kept free below the model's context


def _check_model(model, mode: str) -> None:
    cfg = model.config
    impl = getattr(cfg, "_attn_implementation", None)
    if mode == "mask" and impl not in SUPPORTED_ATTENTION:
        raise NotImplementedError(
            f"attention='mask' needs a custom 4D attention mask, which attention implementation {impl!r} ignores; "
            f"load the model with attn_implementation='sdpa' (or 'eager'), or use attention='segments'"
        )
    if getattr(cfg, "use_bidirectional_attention", False):
        raise NotImplementedError("bidirectional-attention models are not causal LMs; use the reference backend")
    types = set(getattr(cfg, "layer_types", None) or [])
    if types - {"full_attention", "sliding_attention"}:
        raise NotImplementedError(
            f"layer types {sorted(types)} are not supported by the packed engine; use the reference backend"
        )


def _final_logits(model, hidden):
    import torch

    logits = model.get_output_embeddings()(hidden).float()
    scale = getattr(model.config, "logit_scale", None)
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        logits = logits * scale
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _score_batch(model, batch, head_chunk: int, pad_id: int, mode: str) -> list[tuple]:
    """Score one batch of packed units. Returns [(key, sum_logprob, n_tokens)]."""
    import torch

    device = model.device
    if mode == "segments":
        B, T = 1, sum(row_length(u) for u in batch)
    else:
        B, T = len(batch), row_length(batch[0])
    ids = torch.full((B * T,), pad_id, dtype=torch.long)
    pos = torch.zeros((B * T,), dtype=torch.long)
    seg = torch.full((B * T,), -1, dtype=torch.long)
    # Predictor positions: per unit the contiguous range [start + P - 1, start + L) of the flat batch.
    sel, tgt_sel, tgt_tok, tgt_slot, keys, counts, spans = [], [], [], [], [], [], []
    start = 0
    for b, unit in enumerate(batch):
        prompt, ukeys, resps = unit
        if mode == "mask":
            start = b * T
        P, L = len(prompt), row_length(unit)
        ids[start : start + P] = torch.tensor(prompt)
        pos[start : start + P] = torch.arange(P)
        seg[start : start + P] = 0
        base_sel = len(sel)  # index in `sel` of this unit's position P-1
        sel.extend(range(start + P - 1, start + L))
        off, fed = start + P, []
        for i, (key, r) in enumerate(zip(ukeys, resps)):
            n = len(r)
            slot = len(keys)
            keys.append(key)
            counts.append(n)
            if n > 1:
                ids[off : off + n - 1] = torch.tensor(r[:-1])
                pos[off : off + n - 1] = torch.arange(P, P + n - 1)
                seg[off : off + n - 1] = i + 1
                fed.append((off, n - 1))
            # r[0] is predicted by the prompt's last position; r[j] by the position holding r[j-1].
            tgt_sel.append(base_sel)
            tgt_tok.append(r[0])
            tgt_slot.append(slot)
            first = base_sel + 1 + (off - start - P)
            tgt_sel.extend(range(first, first + n - 1))
            tgt_tok.extend(r[1:])
            tgt_slot.extend([slot] * (n - 1))
            off += n - 1
        spans.append((start, P, fed))
        start += L
    # Targets sorted by predictor position, so each head chunk owns a contiguous range of them.
    order = sorted(range(len(tgt_sel)), key=tgt_sel.__getitem__)
    tgt_sel = [tgt_sel[i] for i in order]
    tgt_tok = torch.tensor([tgt_tok[i] for i in order], dtype=torch.long, device=device)
    tgt_slot_t = torch.tensor([tgt_slot[i] for i in order], dtype=torch.long, device=device)
    tgt_sel_t = torch.tensor(tgt_sel, dtype=torch.long, device=device)

    ids, pos = ids.view(B, T).to(device), pos.view(B, T).to(device)
    if mode == "mask":
        mask = attention.block_mask(model, seg.view(B, T).to(device), pos, model.dtype)
        out = model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    else:
        with attention.segments(model, spans):
            out = model.base_model(input_ids=ids, position_ids=pos, use_cache=False)
    hidden = out.last_hidden_state.reshape(B * T, -1)
    hidden = hidden.index_select(0, torch.tensor(sel, dtype=torch.long, device=device))
    del out
    logp = torch.empty(len(tgt_sel), dtype=torch.float32, device=device)
    for s in range(0, hidden.shape[0], head_chunk):
        e = min(s + head_chunk, hidden.shape[0])
        a, z = bisect.bisect_left(tgt_sel, s), bisect.bisect_left(tgt_sel, e)
        lp = torch.log_softmax(_final_logits(model, hidden[s:e]), dim=-1)
        logp[a:z] = lp[tgt_sel_t[a:z] - s, tgt_tok[a:z]]
        del lp
    sums = torch.zeros(len(keys), dtype=torch.float64, device=device)
    sums.index_add_(0, tgt_slot_t, logp.double())
    return [(k, float(v), n) for k, v, n in zip(keys, sums.tolist(), counts)]


def _self_check(model, batch, results, tol: float | None) -> None:
    """Re-score the shortest candidate of the first batch that is not first in its unit, with one plain
    forward pass, and compare (a candidate after another in the same unit is the one a wrong mask hurts)."""

    by_key = {k: (s, n) for k, s, n in results}
    cands = [(u[0], k, r, i > 0) for u in batch for i, (k, r) in enumerate(zip(u[1], u[2]))]
    prompt, key, resp, _ = min(cands, key=lambda x: (not x[3], len(x[0]) + len(x[2]), x[1]))
    ref = reference_logprob_ids(model, prompt, resp) / len(resp)
    got = by_key[key][0] / by_key[key][1]
    allowed = check_tolerance(model.dtype, ref) if tol is None else tol
    if not abs(ref - got) <= allowed:
        raise RuntimeError(
            f"packed scoring disagrees with a plain forward pass on {key!r}: mean_logprob {got:.6f} vs {ref:.6f} "
            f"(|difference| {abs(ref - got):.2e} > {allowed:.2e} allowed in {model.dtype}; model type "
            f"{model.config.model_type!r}); use the reference backend for this model"
        )


def check_tolerance(dtype, ref: float) -> float:
    """How far the engine's mean log-prob may be from the plain pass's, both in `dtype`, before the self-check calls
    the engine wrong. fp32 (and fp64): 1e-3, rounding is ~1e-6 there. Half precisions: the two passes round
    differently and their difference grows with the size of the log-prob (a mean of -10.8 on random 8B weights in
    bf16 on an H200 differed by 4.5e-2, about 1.1 unit roundoffs of 10.8; docs/scoring.md), so the bound is
    4 unit roundoffs of |ref|, and never below the 5e-2 that held on real weights. A wrong attention mask moves an
    affected candidate by 0.1-2 nats (tests/test_score_engine.py shows it caught in bf16 as in fp32)."""
    import torch

    if dtype in (torch.float32, torch.float64):
        return 1e-3
    unit_roundoff = torch.finfo(dtype).eps / 2
    return max(5e-2, 4 * unit_roundoff * abs(ref))


def score_groups(
    model,
    groups: Sequence[Group],
    token_budget: int | None = None,
    head_chunk: int = 256,
    pbar=None,
    self_check: bool = False,
    check_tol: float | None = None,
    attention_mode: str = "auto",
    split_tokens: int | None = None,
) -> list[tuple]:
    """Score grouped examples. Returns [(key, sum_logprob, n_tokens)] in batch order."""
    import torch

    if head_chunk < 1:
        raise ValueError("head_chunk must be positive")
    mode, batches = batch_plan(groups, model.device.type, token_budget, attention_mode, split_tokens)
    _check_model(model, mode)
    pad_id = getattr(model.config, "pad_token_id", None)
    pad_id = pad_id if isinstance(pad_id, int) and 0 <= pad_id < model.config.vocab_size else 0
    out = []
    with torch.inference_mode():
        for i, batch in enumerate(batches):
            res = _score_batch(model, batch, head_chunk, pad_id, mode)
            if self_check and i == 0:
                _self_check(model, batch, res, check_tol)
            out.extend(res)
            if pbar is not None:
                pbar.update(len(res))
    return out


def score_ids(
    model,
    examples: Iterable[tuple],
    token_budget: int | None = None,
    head_chunk: int = 256,
    self_check: bool = True,
    progress: bool = False,
    attention: str = "auto",
    split_tokens: int | None = None,
) -> dict:
    """Token-level entry point: examples (key, prompt_ids, response_ids) -> {key: (sum_logprob, n_tokens)}."""
    groups = group_examples(examples)
    n = sum(len(g.keys) for g in groups)
    with tqdm(total=n, desc="score (packed)", unit="cand", disable=not progress) as pbar:
        res = score_groups(
            model,
            groups,
            token_budget,
            head_chunk,
            pbar,
            self_check,
            attention_mode=attention,
            split_tokens=split_tokens,
        )
    return {k: (s, c) for k, s, c in res}


class PackedScorer:
    """The packed engine as a backend of `grape.score.checkpoint.score_pool`."""

    name = "packed"

    def __init__(
        self,
        model,
        token_budget: int | None = None,
        head_chunk: int = 256,
        attention: str = "auto",
        split_tokens: int | None = None,
        self_check: bool = True,
        model_id: str | None = None,
    ):
        self.model, self.token_budget, self.head_chunk = model, token_budget, head_chunk
        self.attention, self.split_tokens, self.self_check, self.model_id = (
            attention,
            split_tokens,
            self_check,
            model_id,
        )
        self.checked = False

    def fingerprint(self) -> dict:
        return {
            "model": self.model_id,
            "dtype": str(self.model.dtype),
            "device": self.model.device.type,
            "token_budget": self.token_budget,
            "split_tokens": self.split_tokens,
            "attention": resolve_attention(self.model.device.type, self.attention),
        }

    def score(self, groups: Sequence[Group], pbar=None) -> list[tuple]:
        check = self.self_check and not self.checked
        out = score_groups(
            self.model,
            groups,
            self.token_budget,
            self.head_chunk,
            pbar,
            self_check=check,
            attention_mode=self.attention,
            split_tokens=self.split_tokens,
        )
        self.checked = self.checked or check
        return out


def load(model_dir: str, options: Mapping, max_length: int, seed: int) -> PackedScorer:
    import torch

    from grape import model_folder, resume

    return PackedScorer(
        model_folder.load_model(model_dir, dtype=getattr(torch, options.get("dtype") or "float32")),
        token_budget=options["token_budget"],
        head_chunk=options["head_chunk"],
        model_id=resume.model_digest(model_dir),  # what the model is, not where
    )
