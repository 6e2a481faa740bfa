"""The packed engine's plan: which candidates share a forward pass, and in what order.

A group's candidates (one prompt) are laid out as one *unit* `[prompt, r1[:-1], r2[:-1], ...]` so the prompt is
computed once; a group longer than `split_tokens` is split into several units (its prompt repeated). Units are
sorted longest first and filled into batches of `token_budget` input tokens: laid end to end in one unpadded
sequence (attention "segments", CPU default) or as right-padded rows (attention "mask", GPU default).
"""

from __future__ import annotations

from typing import Sequence

from grape.score.tokens import Group


def units(groups: Sequence[Group], split_tokens: int) -> list[tuple[tuple[int, ...], list, list]]:
    """Split groups into packed units (prompt, keys, responses) of at most `split_tokens` input tokens.

    A unit's input length is len(prompt) + sum(len(r) - 1): a response's last token is not fed in.
    A single candidate longer than the budget still gets a unit of its own.
    """
    out = []
    for g in groups:
        p = len(g.prompt)
        keys, resps, length = [], [], p
        for key, r in zip(g.keys, g.responses):
            if keys and length + len(r) - 1 > split_tokens:
                out.append((g.prompt, keys, resps))
                keys, resps, length = [], [], p
            keys.append(key)
            resps.append(r)
            length += len(r) - 1
        out.append((g.prompt, keys, resps))
    return out


def row_length(unit) -> int:
    prompt, _, resps = unit
    return len(prompt) + sum(len(r) - 1 for r in resps)


def batches(units_, token_budget: int, attention: str = "segments") -> list[list]:
    """Sort units by length (longest first; ties by first key) and fill batches up to `token_budget`.

    segments: units are laid end to end in one sequence, sum of lengths <= budget (no padding).
    mask: one right-padded row per unit, rows x longest row <= budget.
    """
    ordered = sorted(units_, key=lambda u: (-row_length(u), u[1][0]))
    out, cur, used = [], [], 0
    for u in ordered:
        n = row_length(u)
        need = used + n if attention == "segments" else (len(cur) + 1) * (row_length(cur[0]) if cur else n)
        if cur and need > token_budget:
            out.append(cur)
            cur, used = [], 0
        cur.append(u)
        used += n
    if cur:
        out.append(cur)
    return out


def resolve_attention(device_type: str, attention: str) -> str:
    if attention == "auto":
        return "segments" if device_type == "cpu" else "mask"
    if attention not in ("segments", "mask"):
        raise ValueError(f"attention must be 'auto', 'segments' or 'mask', got {attention!r}")
    return attention


# Measured defaults (docs/scoring.md): on CPU small passes keep activations in cache (1024 beat 2048/4096 by
# 4-8% on SmolLM2-135M, 2 threads); on a GPU large passes fill the device.
DEFAULT_TOKEN_BUDGET = {"cpu": 1024, "cuda": 16384}
MIN_SPLIT_TOKENS = 8192


def batch_plan(
    groups: Sequence[Group],
    device_type: str = "cpu",
    token_budget: int | None = None,
    attention: str = "auto",
    split_tokens: int | None = None,
) -> tuple[str, list[list]]:
    """The attention mode and the batches of packed units that score_groups will run, in order.

    token_budget: input tokens per forward pass (segments: sum of unit lengths; mask: rows x longest row);
    None picks DEFAULT_TOKEN_BUDGET for the device. split_tokens: a group longer than this is split into
    several units (its prompt repeated); None means token_budget in mask mode (the B x T x T mask grows
    with it) and max(token_budget, 8192) in segments mode, so that a prompt is shared by as many candidates
    as possible. A unit longer than the budget runs in a pass of its own.
    """
    attention = resolve_attention(device_type, attention)
    if token_budget is None:
        token_budget = DEFAULT_TOKEN_BUDGET.get(device_type, DEFAULT_TOKEN_BUDGET["cuda"])
    if split_tokens is None:
        split_tokens = token_budget if attention == "mask" else max(token_budget, MIN_SPLIT_TOKENS)
    if token_budget < 1 or split_tokens < 1:
        raise ValueError("token_budget and split_tokens must be positive")
    return attention, batches(units(groups, split_tokens), token_budget, attention)
