"""Attention for the packed engine: each response sees its prompt and its own earlier tokens, nothing else.

* mode "mask": one right-padded row per unit and a 4D block mask (`block_mask`) through the model's own
  sdpa/eager attention.
* mode "segments": units laid end to end in one unpadded sequence; a registered transformers attention
  function computes attention per prompt and per response with sdpa, so no masked-out block is computed.
  `segments(model, spans)` switches a model to it for one forward pass.
"""

from __future__ import annotations

import contextlib
import contextvars

# ---- mode "mask": padded rows and a 4D block mask through the model's own sdpa/eager attention


def block_mask(model, seg, pos, dtype):
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
            "use attention='segments' or the reference backend"
        )
    return additive(allowed)


# ---- mode "segments": one unpadded sequence; attention computed per prompt and per response

SEGMENTS_IMPL = "grape_segments"
_SDPA_GQA = None  # whether sdpa takes enable_gqa (torch >= 2.5); set by register_segments
_LAYOUT: contextvars.ContextVar = contextvars.ContextVar("grape_segments_layout", default=None)


class Layout:
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


def _segment_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None, softcap=None, **kwargs
):
    """AttentionInterface function: exact attention per segment of the flat batch, no wasted blocks."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    layout = _LAYOUT.get()
    if layout is None:
        raise RuntimeError("grape_segments attention called outside grape.score.packed")
    if softcap is not None or kwargs.get("s_aux") is not None:
        raise NotImplementedError(
            "attention softcapping / sinks are not supported by attention='segments'; "
            "use attention='mask' with eager attention, or the reference backend"
        )
    gqa = {}
    if query.shape[1] != key.shape[1]:
        if _SDPA_GQA:
            gqa = {"enable_gqa": True}
        else:
            n_rep = query.shape[1] // key.shape[1]
            key, value = key.repeat_interleave(n_rep, dim=1), value.repeat_interleave(n_rep, dim=1)
    out = torch.empty_like(query)  # [1, H, N, D]; 4D inputs take CPU sdpa's flash kernel
    window = sliding_window
    for a, p, _ in layout.spans:
        kp, vp = key[:, :, a : a + p], value[:, :, a : a + p]
        if window is None or p <= window:
            out[:, :, a : a + p] = sdpa(query[:, :, a : a + p], kp, vp, is_causal=True, scale=scaling, **gqa)
        else:
            out[:, :, a : a + p] = sdpa(
                query[:, :, a : a + p],
                kp,
                vp,
                scale=scaling,
                **gqa,
                attn_mask=layout.mask(p, 0, window, query.dtype, query.device),
            )
    if layout.gather:
        idx = layout.gather_index(key.device)
        kg, vg = key.index_select(2, idx), value.index_select(2, idx)
    for s, m, p, off in layout.plan:
        if off is None:
            kk, vv = key[:, :, s - p : s + m], value[:, :, s - p : s + m]
        else:
            kk, vv = kg[:, :, off : off + p + m], vg[:, :, off : off + p + m]
        out[:, :, s : s + m] = sdpa(
            query[:, :, s : s + m],
            kk,
            vv,
            scale=scaling,
            **gqa,
            attn_mask=layout.mask(m, p, window, query.dtype, query.device),
        )
    return out.transpose(1, 2), None  # [1, N, H, D]


def register_segments() -> None:
    global _SDPA_GQA
    import torch
    from transformers import AttentionInterface

    if _SDPA_GQA is None:
        major, minor = (int(x) for x in torch.__version__.split(".")[:2])
        _SDPA_GQA = (major, minor) >= (2, 5)

    AttentionInterface.register(SEGMENTS_IMPL, _segment_attention)


@contextlib.contextmanager
def segments(model, spans):
    """Run the model's attention as "segments" over the flat batch described by `spans`, for one forward pass."""
    register_segments()
    cfg = model.config
    impl, token = cfg._attn_implementation, _LAYOUT.set(Layout(spans))
    try:
        cfg._attn_implementation = SEGMENTS_IMPL
        yield
    finally:
        cfg._attn_implementation = impl
        _LAYOUT.reset(token)
