"""The fast, exact scoring engine: prompt-shared packing and a response-only, chunked LM head.

It computes the numbers of `grape.score.score_reference` (the plain per-example loop) and differs from
it only by floating-point rounding; docs/scoring.md has the full description and measurements. In short:

* Candidates with the same prompt token ids (one instruction) form a *group*, laid out as one *unit*
  `[prompt, r1[:-1], r2[:-1], ...]`: the prompt is computed once for all its candidates. Each response
  sees the prompt and its own earlier tokens only, and its position ids restart at len(prompt), so it
  is computed exactly as in its own `[prompt, response]` sequence. A response's last token predicts
  nothing that is scored and nothing attends to it, so it is not fed in. A group longer than
  `split_tokens` is split into several units (its prompt repeated).
* attention="segments" (default on CPU): units are laid end to end in one unpadded sequence per pass
  (`token_budget` tokens) and a registered attention function computes attention per prompt and per
  response with sdpa, so no masked-out block is computed. attention="mask" (default on CUDA): one
  right-padded row per unit and a 4D block mask through the model's own sdpa/eager attention.
* The base model (`model.base_model`) returns hidden states; the LM head runs only on the positions
  that predict a response token (the prompt's last position, shared, and every fed response token),
  `head_chunk` positions at a time, with log_softmax in fp32. A [tokens, vocab] logits tensor for the
  whole batch is never built.

Output contract (the keys of `score_reference`): scored rows {candidate_id, instruction_id, source,
n_tokens, sum_logprob, mean_logprob, truncated} and skipped rows {candidate_id, reason}, both **sorted
by candidate_id**, so the output does not depend on the input order, and batching, chunking and sharding
change scores only within rounding (1e-6 here).
"""

from __future__ import annotations

import bisect
import contextvars
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from tqdm import tqdm

from grape.score import fit_to_length, reference_logprob_ids  # noqa: F401 (the plain formula, re-exported)
from grape.template import Template

ROW_FIELDS = ("candidate_id", "instruction_id", "instruction", "response", "source")
SUPPORTED_ATTENTION = ("sdpa", "eager")
PARTIAL_FORMAT = "grape-score-partial/1"


# --------------------------------------------------------------------------------------------------
# Token-level API: examples are (key, prompt_ids, response_ids); used by the text API and benchmarks.
# --------------------------------------------------------------------------------------------------

@dataclass
class Group:
    """Candidates that share one prompt (token ids). `keys` sorted; `responses[i]` belongs to keys[i]."""
    prompt: tuple[int, ...]
    keys: list = field(default_factory=list)
    responses: list = field(default_factory=list)


def group_examples(examples: Iterable[tuple]) -> list[Group]:
    """Group (key, prompt_ids, response_ids) by prompt; canonical order (by smallest key), whatever the input order."""
    by_prompt: dict[tuple, Group] = {}
    for key, prompt_ids, response_ids in examples:
        prompt = tuple(prompt_ids)
        if not prompt:
            raise ValueError(f"{key!r}: empty prompt (the template gives no tokens before the response)")
        if not response_ids:
            raise ValueError(f"{key!r}: empty response")
        g = by_prompt.setdefault(prompt, Group(prompt))
        g.keys.append(key)
        g.responses.append(list(response_ids))
    groups = []
    for g in by_prompt.values():
        order = sorted(range(len(g.keys)), key=lambda i: g.keys[i])
        groups.append(Group(g.prompt, [g.keys[i] for i in order], [g.responses[i] for i in order]))
    groups.sort(key=lambda g: g.keys[0])
    return groups


def _units(groups: Sequence[Group], split_tokens: int) -> list[tuple[tuple[int, ...], list, list]]:
    """Split groups into packed units (prompt, keys, responses) of at most `split_tokens` input tokens.

    A unit's input length is len(prompt) + sum(len(r) - 1): a response's last token is not fed in.
    A single candidate longer than the budget still gets a unit of its own.
    """
    units = []
    for g in groups:
        p = len(g.prompt)
        keys, resps, length = [], [], p
        for key, r in zip(g.keys, g.responses):
            if keys and length + len(r) - 1 > split_tokens:
                units.append((g.prompt, keys, resps))
                keys, resps, length = [], [], p
            keys.append(key)
            resps.append(r)
            length += len(r) - 1
        units.append((g.prompt, keys, resps))
    return units


def _row_length(unit) -> int:
    prompt, _, resps = unit
    return len(prompt) + sum(len(r) - 1 for r in resps)


def _batches(units, token_budget: int, attention: str = "segments") -> list[list]:
    """Sort units by length (longest first; ties by first key) and fill batches up to `token_budget`.

    segments: units are laid end to end in one sequence, sum of lengths <= budget (no padding).
    mask: one right-padded row per unit, rows x longest row <= budget.
    """
    units = sorted(units, key=lambda u: (-_row_length(u), u[1][0]))
    batches, cur, used = [], [], 0
    for u in units:
        n = _row_length(u)
        need = used + n if attention == "segments" else (len(cur) + 1) * (_row_length(cur[0]) if cur else n)
        if cur and need > token_budget:
            batches.append(cur)
            cur, used = [], 0
        cur.append(u)
        used += n
    if cur:
        batches.append(cur)
    return batches


def _check_model(model, attention: str) -> None:
    cfg = model.config
    impl = getattr(cfg, "_attn_implementation", None)
    if attention == "mask" and impl not in SUPPORTED_ATTENTION:
        raise NotImplementedError(
            f"attention='mask' needs a custom 4D attention mask, which attention implementation {impl!r} ignores; "
            f"load the model with attn_implementation='sdpa' (or 'eager'), or use attention='segments'")
    if getattr(cfg, "use_bidirectional_attention", False):
        raise NotImplementedError("bidirectional-attention models are not causal LMs; use the reference backend")
    types = set(getattr(cfg, "layer_types", None) or [])
    if types - {"full_attention", "sliding_attention"}:
        raise NotImplementedError(f"layer types {sorted(types)} are not supported by score_packed; use the reference backend")


def _resolve_attention(device_type: str, attention: str) -> str:
    if attention == "auto":
        return "segments" if device_type == "cpu" else "mask"
    if attention not in ("segments", "mask"):
        raise ValueError(f"attention must be 'auto', 'segments' or 'mask', got {attention!r}")
    return attention


# Measured defaults (docs/scoring.md): on CPU small passes keep activations in cache (1024 beat 2048/4096 by
# 4-8% on SmolLM2-135M, 2 threads); on a GPU large passes fill the device.
DEFAULT_TOKEN_BUDGET = {"cpu": 1024, "cuda": 16384}
MIN_SPLIT_TOKENS = 8192


def batch_plan(groups: Sequence[Group], device_type: str = "cpu", token_budget: int | None = None,
               attention: str = "auto", split_tokens: int | None = None) -> tuple[str, list[list]]:
    """The attention mode and the batches of packed units that score_groups will run, in order.

    token_budget: input tokens per forward pass (segments: sum of unit lengths; mask: rows x longest row);
    None picks DEFAULT_TOKEN_BUDGET for the device. split_tokens: a group longer than this is split into
    several units (its prompt repeated); None means token_budget in mask mode (the B x T x T mask grows
    with it) and max(token_budget, 8192) in segments mode, so that a prompt is shared by as many candidates
    as possible. A unit longer than the budget runs in a pass of its own.
    """
    attention = _resolve_attention(device_type, attention)
    if token_budget is None:
        token_budget = DEFAULT_TOKEN_BUDGET.get(device_type, DEFAULT_TOKEN_BUDGET["cuda"])
    if split_tokens is None:
        split_tokens = token_budget if attention == "mask" else max(token_budget, MIN_SPLIT_TOKENS)
    if token_budget < 1 or split_tokens < 1:
        raise ValueError("token_budget and split_tokens must be positive")
    return attention, _batches(_units(groups, split_tokens), token_budget, attention)


# ---- attention, mode "mask": padded rows and a 4D block mask through the model's own sdpa/eager attention

def _attention_masks(model, seg, pos, dtype):
    """Block mask: query q sees key k iff k <= q and (k is in the prompt or in q's own response).

    seg: [B, T] 0 = prompt, i = i-th response, -1 = padding (padding sees earlier padding, so no row of
    the softmax is empty and no NaN appears). Returns a 4D additive mask, or a dict per layer type when
    the model mixes full and sliding-window layers.
    """
    import torch

    cfg = model.config
    T = seg.shape[1]
    idx = torch.arange(T, device=seg.device)
    causal = (idx[:, None] >= idx[None, :])[None]
    sq, sk = seg[:, :, None], seg[:, None, :]
    allowed = causal & ((sq == sk) | (sk == 0))
    neg = torch.finfo(dtype).min

    def additive(a):
        return torch.zeros(a.shape, dtype=dtype, device=a.device).masked_fill_(~a, neg)[:, None]

    window = getattr(cfg, "sliding_window", None)
    types = set(getattr(cfg, "layer_types", None) or [])
    if "sliding_attention" in types:
        # Same rule as transformers' sliding_window_overlay: q - k < window, in (logical) positions.
        sliding = allowed & ((pos[:, :, None] - pos[:, None, :]) < window)
        return {"full_attention": additive(allowed), "sliding_attention": additive(sliding)}
    if window is not None and not types and int(pos.max()) >= window:
        raise NotImplementedError(
            f"{cfg.model_type}: sequences reach position {int(pos.max())}, beyond the sliding window {window}; "
            "use attention='segments' or the reference backend")
    return additive(allowed)


# ---- attention, mode "segments": one unpadded sequence; attention computed per prompt and per response

SEGMENTS_IMPL = "grape_segments"
_SDPA_GQA = None  # whether sdpa takes enable_gqa (torch >= 2.5); set by _register_segments
_LAYOUT: contextvars.ContextVar = contextvars.ContextVar("grape_segments_layout", default=None)


class _Layout:
    """Spans of one flat batch: per unit (start, prompt length, [(start, length) of each fed response])."""

    def __init__(self, spans):
        self.spans = spans
        self.masks: dict = {}
        # Keys of a response = its prompt's keys + its own. The first fed response of a unit follows its prompt,
        # so those are one slice; for the others, one index_select per layer gathers [prompt, response] copies.
        self.plan, gather, off = [], [], 0
        for a, p, resps in spans:
            for i, (s, m) in enumerate(resps):
                if i == 0 and s == a + p:
                    self.plan.append((s, m, p, None))
                else:
                    self.plan.append((s, m, p, off))
                    gather.extend(range(a, a + p))
                    gather.extend(range(s, s + m))
                    off += p + m
        self.gather = gather
        self.gather_t = None

    def gather_index(self, device):
        import torch

        if self.gather_t is None:
            self.gather_t = torch.tensor(self.gather, dtype=torch.long, device=device)
        return self.gather_t

    def mask(self, m: int, p: int, window, dtype, device):
        """[m, p + m] additive: response token i (position p + i) sees keys j <= p + i (and p + i - j < window).

        A float mask (not bool) so that CPU sdpa takes its flash kernel; every row keeps key 0, so no NaN.
        """
        import torch

        key = (m, p, window, dtype)
        if key not in self.masks:
            i = torch.arange(m, device=device)[:, None] + p
            j = torch.arange(p + m, device=device)[None, :]
            ok = j <= i
            if window is not None:
                ok &= (i - j) < window
            self.masks[key] = torch.zeros(ok.shape, dtype=dtype, device=device).masked_fill_(~ok, float("-inf"))
        return self.masks[key]


def _segment_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None,
                       softcap=None, **kwargs):
    """AttentionInterface function: exact attention per segment of the flat batch, no wasted blocks."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    layout = _LAYOUT.get()
    if layout is None:
        raise RuntimeError("grape_segments attention called outside score_engine")
    if softcap is not None or kwargs.get("s_aux") is not None:
        raise NotImplementedError("attention softcapping / sinks are not supported by attention='segments'; "
                                  "use attention='mask' with eager attention, or the reference backend")
    gqa = {}
    if query.shape[1] != key.shape[1]:
        if _SDPA_GQA:
            gqa = {"enable_gqa": True}
        else:
            n_rep = query.shape[1] // key.shape[1]
            key, value = key.repeat_interleave(n_rep, dim=1), value.repeat_interleave(n_rep, dim=1)
    out = torch.empty_like(query)                     # [1, H, N, D]; 4D inputs take CPU sdpa's flash kernel
    window = sliding_window
    for a, p, _ in layout.spans:
        kp, vp = key[:, :, a:a + p], value[:, :, a:a + p]
        if window is None or p <= window:
            out[:, :, a:a + p] = sdpa(query[:, :, a:a + p], kp, vp, is_causal=True, scale=scaling, **gqa)
        else:
            out[:, :, a:a + p] = sdpa(query[:, :, a:a + p], kp, vp, scale=scaling, **gqa,
                                      attn_mask=layout.mask(p, 0, window, query.dtype, query.device))
    if layout.gather:
        idx = layout.gather_index(key.device)
        kg, vg = key.index_select(2, idx), value.index_select(2, idx)
    for s, m, p, off in layout.plan:
        if off is None:
            kk, vv = key[:, :, s - p:s + m], value[:, :, s - p:s + m]
        else:
            kk, vv = kg[:, :, off:off + p + m], vg[:, :, off:off + p + m]
        out[:, :, s:s + m] = sdpa(query[:, :, s:s + m], kk, vv, scale=scaling, **gqa,
                                  attn_mask=layout.mask(m, p, window, query.dtype, query.device))
    return out.transpose(1, 2), None                  # [1, N, H, D]


def _register_segments() -> None:
    global _SDPA_GQA
    import torch
    from transformers import AttentionInterface

    if _SDPA_GQA is None:
        major, minor = (int(x) for x in torch.__version__.split(".")[:2])
        _SDPA_GQA = (major, minor) >= (2, 5)

    AttentionInterface.register(SEGMENTS_IMPL, _segment_attention)


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


def _score_batch(model, batch, head_chunk: int, pad_id: int, attention: str) -> list[tuple]:
    """Score one batch of packed units. Returns [(key, sum_logprob, n_tokens)]."""
    import torch

    device = model.device
    if attention == "segments":
        B, T = 1, sum(_row_length(u) for u in batch)
    else:
        B, T = len(batch), _row_length(batch[0])
    ids = torch.full((B * T,), pad_id, dtype=torch.long)
    pos = torch.zeros((B * T,), dtype=torch.long)
    seg = torch.full((B * T,), -1, dtype=torch.long)
    # Predictor positions: per unit the contiguous range [start + P - 1, start + L) of the flat batch.
    sel, tgt_sel, tgt_tok, tgt_slot, keys, counts, spans = [], [], [], [], [], [], []
    start = 0
    for b, unit in enumerate(batch):
        prompt, ukeys, resps = unit
        if attention == "mask":
            start = b * T
        P, L = len(prompt), _row_length(unit)
        ids[start:start + P] = torch.tensor(prompt)
        pos[start:start + P] = torch.arange(P)
        seg[start:start + P] = 0
        base_sel = len(sel)                       # index in `sel` of this unit's position P-1
        sel.extend(range(start + P - 1, start + L))
        off, fed = start + P, []
        for i, (key, r) in enumerate(zip(ukeys, resps)):
            n = len(r)
            slot = len(keys)
            keys.append(key)
            counts.append(n)
            if n > 1:
                ids[off:off + n - 1] = torch.tensor(r[:-1])
                pos[off:off + n - 1] = torch.arange(P, P + n - 1)
                seg[off:off + n - 1] = i + 1
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
    if attention == "mask":
        mask = _attention_masks(model, seg.view(B, T).to(device), pos, model.dtype)
        out = model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    else:
        cfg = model.config
        impl, token = cfg._attn_implementation, _LAYOUT.set(_Layout(spans))
        try:
            cfg._attn_implementation = SEGMENTS_IMPL
            out = model.base_model(input_ids=ids, position_ids=pos, use_cache=False)
        finally:
            cfg._attn_implementation = impl
            _LAYOUT.reset(token)
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
    import torch

    if tol is None:
        tol = 1e-3 if model.dtype == torch.float32 else 5e-2
    by_key = {k: (s, n) for k, s, n in results}
    cands = [(u[0], k, r, i > 0) for u in batch for i, (k, r) in enumerate(zip(u[1], u[2]))]
    prompt, key, resp, _ = min(cands, key=lambda x: (not x[3], len(x[0]) + len(x[2]), x[1]))
    ref = reference_logprob_ids(model, prompt, resp) / len(resp)
    got = by_key[key][0] / by_key[key][1]
    if not abs(ref - got) <= tol:
        raise RuntimeError(
            f"packed scoring disagrees with a plain forward pass on {key!r}: mean_logprob {got:.6f} vs {ref:.6f} "
            f"(model type {model.config.model_type!r}); use the reference backend for this model")


def score_groups(model, groups: Sequence[Group], token_budget: int | None = None, head_chunk: int = 256,
                 pbar=None, self_check: bool = False, check_tol: float | None = None,
                 attention: str = "auto", split_tokens: int | None = None) -> list[tuple]:
    """Score grouped examples. Returns [(key, sum_logprob, n_tokens)] in batch order."""
    import torch

    if head_chunk < 1:
        raise ValueError("head_chunk must be positive")
    attention, batches = batch_plan(groups, model.device.type, token_budget, attention, split_tokens)
    _check_model(model, attention)
    if attention == "segments":
        _register_segments()
    pad_id = getattr(model.config, "pad_token_id", None)
    pad_id = pad_id if isinstance(pad_id, int) and 0 <= pad_id < model.config.vocab_size else 0
    out = []
    with torch.inference_mode():
        for i, batch in enumerate(batches):
            res = _score_batch(model, batch, head_chunk, pad_id, attention)
            if self_check and i == 0:
                _self_check(model, batch, res, check_tol)
            out.extend(res)
            if pbar is not None:
                pbar.update(len(res))
    return out


def score_ids(model, examples: Iterable[tuple], token_budget: int | None = None, head_chunk: int = 256,
              self_check: bool = True, progress: bool = False, attention: str = "auto",
              split_tokens: int | None = None) -> dict:
    """Token-level entry point: examples (key, prompt_ids, response_ids) -> {key: (sum_logprob, n_tokens)}."""
    groups = group_examples(examples)
    n = sum(len(g.keys) for g in groups)
    with tqdm(total=n, desc="score (packed)", unit="cand", disable=not progress) as pbar:
        res = score_groups(model, groups, token_budget, head_chunk, pbar, self_check, attention=attention,
                           split_tokens=split_tokens)
    return {k: (s, c) for k, s, c in res}


# --------------------------------------------------------------------------------------------------
# Text API: pool rows in, score rows out (the contract of grape.score.score_reference).
# --------------------------------------------------------------------------------------------------

@dataclass
class Prepared:
    meta: dict        # candidate_id -> (instruction_id, source, truncated)
    skipped: list     # [{candidate_id, reason}], sorted by candidate_id
    groups: list      # [Group], canonical order; keys are candidate ids


def _validate(rows: Sequence[Mapping]) -> None:
    seen = set()
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {i}: expected a mapping, got {type(row).__name__}")
        for f in ROW_FIELDS:
            if f not in row:
                raise ValueError(f"row {i} (candidate_id={row.get('candidate_id')!r}): field '{f}' missing")
            if not isinstance(row[f], str):
                raise ValueError(f"row {i} (candidate_id={row.get('candidate_id')!r}): field '{f}' must be a string, "
                                 f"got {type(row[f]).__name__}")
        if row["candidate_id"] in seen:
            raise ValueError(f"row {i}: duplicate candidate_id {row['candidate_id']!r}")
        seen.add(row["candidate_id"])


def prepare(tokenizer, template: Template, rows: Iterable[Mapping], max_length: int,
            overlong: str = "skip") -> Prepared:
    """Validate, tokenize (exactly as score_reference) and group the pool; apply the overlong policy."""
    if overlong not in ("skip", "truncate"):
        raise ValueError(f"overlong must be 'skip' or 'truncate', got {overlong!r}")
    rows = list(rows)
    _validate(rows)
    meta, skipped, examples = {}, [], []
    for row in rows:
        p, r = template.tokenize(tokenizer, row["instruction"], row["response"], add_eos=template.score_eos)
        r, status = fit_to_length(p, r, max_length, overlong)
        if r is None:
            skipped.append({"candidate_id": row["candidate_id"], "reason": status.split(":", 1)[1]})
            continue
        meta[row["candidate_id"]] = (row["instruction_id"], row["source"], status == "truncated")
        examples.append((row["candidate_id"], p, r))
    skipped.sort(key=lambda s: s["candidate_id"])
    return Prepared(meta, skipped, group_examples(examples))


def plan_chunks(groups: Sequence[Group], chunk_size: int | None) -> list[list[Group]]:
    """Consecutive whole groups of at least `chunk_size` candidates (the last may be smaller); None: one chunk."""
    if not chunk_size:
        return [list(groups)] if groups else []
    chunks, cur, n = [], [], 0
    for g in groups:
        cur.append(g)
        n += len(g.keys)
        if n >= chunk_size:
            chunks.append(cur)
            cur, n = [], 0
    if cur:
        chunks.append(cur)
    return chunks


def _rows_out(prep: Prepared, results: Iterable[tuple]) -> list[dict]:
    out = []
    for key, total, n in results:
        instruction_id, source, truncated = prep.meta[key]
        out.append({"candidate_id": key, "instruction_id": instruction_id, "source": source, "n_tokens": n,
                    "sum_logprob": total, "mean_logprob": total / n, "truncated": truncated})
    return out


def score_packed(model, tokenizer, template: Template, rows: Iterable[Mapping], max_length: int,
                 overlong: str = "skip", token_budget: int | None = None, head_chunk: int = 256, progress: bool = True,
                 on_chunk: Callable[[int, list[dict]], None] | None = None, chunk_size: int | None = None,
                 self_check: bool = True, attention: str = "auto",
                 split_tokens: int | None = None) -> tuple[list[dict], list[dict]]:
    """Score a pool; same contract as score_reference, rows sorted by candidate_id.

    chunk_size: score whole instructions in chunks of about this many candidates and call
    `on_chunk(chunk_index, scored_rows)` after each (for checkpointing; see score_packed_resumable).
    self_check: re-score one short candidate with a plain forward pass and raise if they disagree.
    """
    prep = prepare(tokenizer, template, rows, max_length, overlong)
    scored = []
    with tqdm(total=len(prep.meta), desc="score (packed)", unit="cand", disable=not progress) as pbar:
        for ci, chunk in enumerate(plan_chunks(prep.groups, chunk_size)):
            res = _rows_out(prep, score_groups(model, chunk, token_budget, head_chunk, pbar,
                                               self_check=self_check and ci == 0, attention=attention,
                                               split_tokens=split_tokens))
            res.sort(key=lambda s: s["candidate_id"])
            if on_chunk is not None:
                on_chunk(ci, res)
            scored.extend(res)
    scored.sort(key=lambda s: s["candidate_id"])
    return scored, prep.skipped


# --------------------------------------------------------------------------------------------------
# Resume and shards
# --------------------------------------------------------------------------------------------------

def pool_fingerprint(template: Template, rows: Sequence[Mapping], max_length: int, overlong: str,
                     token_budget: int | None, chunk_size: int, extra: Mapping | None = None) -> str:
    """What a partial file's chunks depend on: the pool's text, the template, the length policy, the plan."""
    h = hashlib.sha256()
    h.update(json.dumps({"template": [template.prompt, template.response, template.score_eos],
                         "max_length": max_length, "overlong": overlong, "token_budget": token_budget,
                         "chunk_size": chunk_size, "extra": dict(extra or {})}, sort_keys=True, default=str).encode())
    for row in sorted(rows, key=lambda r: r["candidate_id"]):
        h.update(json.dumps([row[f] for f in ROW_FIELDS]).encode())
    return h.hexdigest()


def _read_partial(path: Path, fingerprint: str) -> dict[int, list[dict]]:
    """Completed chunks of a partial file. A torn last line (a kill mid-write) is cut off the file."""
    done: dict[int, list[dict]] = {}
    if not path.exists():
        return done
    good = 0
    with open(path, "rb") as fh:
        data = fh.read()
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(rec, dict) or rec.get("format") != PARTIAL_FORMAT or rec.get("fingerprint") != fingerprint:
            raise ValueError(f"{path}: partial scores from a different pool, model or settings; delete it to start over")
        done[int(rec["chunk"])] = rec["scored"]
        good += len(line)
    if good < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return done


def score_packed_resumable(model, tokenizer, template: Template, rows: Iterable[Mapping], max_length: int,
                           overlong: str = "skip", *, partial_path: str | os.PathLike, chunk_size: int = 512,
                           token_budget: int | None = None, head_chunk: int = 256, progress: bool = True,
                           fingerprint_extra: Mapping | None = None,
                           on_chunk: Callable[[int, list[dict]], None] | None = None,
                           self_check: bool = True, attention: str = "auto",
                 split_tokens: int | None = None) -> tuple[list[dict], list[dict]]:
    """score_packed that appends each finished chunk to `partial_path` (one JSON line per chunk, fsynced)
    and, when rerun, skips the chunks already there. The result is identical to an uninterrupted run.

    `fingerprint_extra` should name the model (e.g. its folder and dtype): a partial file written for
    another pool, template, length policy, plan or model is refused. The caller writes the final output
    atomically and then deletes the partial file. `on_chunk(index, rows)` runs after a chunk is durable.
    """
    rows = list(rows)
    prep = prepare(tokenizer, template, rows, max_length, overlong)
    fp = pool_fingerprint(template, rows, max_length, overlong, token_budget, chunk_size,
                          {"attention": _resolve_attention(model.device.type, attention), "split_tokens": split_tokens,
                           "device": model.device.type, **dict(fingerprint_extra or {})})
    path = Path(partial_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = _read_partial(path, fp)
    chunks = plan_chunks(prep.groups, chunk_size)
    scored, first = [], True
    with tqdm(total=len(prep.meta), desc="score (packed)", unit="cand", disable=not progress) as pbar:
        for ci, chunk in enumerate(chunks):
            keys = sorted(k for g in chunk for k in g.keys)
            if ci in done:
                if sorted(r["candidate_id"] for r in done[ci]) != keys:
                    raise ValueError(f"{path}: chunk {ci} does not match this pool; delete it to start over")
                scored.extend(done[ci])
                pbar.update(len(keys))
                continue
            res = _rows_out(prep, score_groups(model, chunk, token_budget, head_chunk, pbar,
                                               self_check=self_check and first, attention=attention,
                                               split_tokens=split_tokens))
            first = False
            res.sort(key=lambda s: s["candidate_id"])
            line = json.dumps({"format": PARTIAL_FORMAT, "fingerprint": fp, "chunk": ci, "scored": res},
                              ensure_ascii=False) + "\n"
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            if on_chunk is not None:
                on_chunk(ci, res)
            scored.extend(res)
    scored.sort(key=lambda s: s["candidate_id"])
    return scored, prep.skipped


def shard_of(instruction_id: str, n_shards: int) -> int:
    """Stable shard of an instruction: sha256 of its id, mod n_shards (independent of pool order and of Python's hash seed)."""
    return int.from_bytes(hashlib.sha256(instruction_id.encode("utf-8")).digest()[:8], "big") % n_shards


def shard_rows(rows: Iterable[Mapping], shard_index: int, n_shards: int) -> list[Mapping]:
    """The rows of shard `shard_index` of `n_shards`: whole instructions, assigned by `shard_of`, pool order kept."""
    if n_shards < 1 or not 0 <= shard_index < n_shards:
        raise ValueError(f"shard {shard_index} of {n_shards} does not exist")
    return [row for row in rows if shard_of(row["instruction_id"], n_shards) == shard_index]


def gather_shards(parts: Iterable[tuple[list[dict], list[dict]]]) -> tuple[list[dict], list[dict]]:
    """Join the (scored, skipped) results of all shards; sorted by candidate_id, duplicates refused."""
    scored, skipped = [], []
    for s, k in parts:
        scored.extend(s)
        skipped.extend(k)
    ids = [r["candidate_id"] for r in scored] + [r["candidate_id"] for r in skipped]
    if len(ids) != len(set(ids)):
        raise ValueError("a candidate appears in more than one shard")
    scored.sort(key=lambda r: r["candidate_id"])
    skipped.sort(key=lambda r: r["candidate_id"])
    return scored, skipped
