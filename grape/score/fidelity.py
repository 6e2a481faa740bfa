"""How far a bf16 scoring run is from fp32 on the same candidates: what GRAPE would pick differently, and why.

bf16 moves every score a little (about 1e-3 nats on SmolLM2); that only matters where it changes the argmax, and a
changed pick is harmless when the two candidates were a near-tie anyway. So the comparison reports, per
instruction, the Spearman correlation of the candidates' scores, whether the pick (highest mean log-prob, ties to
the smallest candidate_id, as `grape.select` breaks them) differs, and whether each differing pick was a near-tie
(the fp32 gap between the two picks below `tie` nats). The score stage runs it on a sample of its own instructions
whenever its dtype is not fp32 (`score.fidelity_sample`), so the report shows it for that experiment;
`bench/score.py --dtype-fidelity` runs it on a benchmark pool.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Rank correlation (ties ranked by position; 1.0 when either side is constant)."""

    def ranks(x):
        r = [0.0] * len(x)
        for rank, i in enumerate(sorted(range(len(x)), key=x.__getitem__)):
            r[i] = float(rank)
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var else 1.0


def compare(reference: Mapping[str, tuple[str, float]], other: Mapping[str, float], tie: float) -> dict:
    """`reference`: candidate_id -> (instruction key, fp32 mean log-prob); `other`: candidate_id -> the run's mean
    log-prob (the candidates of `reference` it scored). Returns the fidelity summary."""
    by_instr: dict[str, list[str]] = {}
    for cid, (instr, _) in reference.items():
        if cid in other:
            by_instr.setdefault(instr, []).append(cid)
    ref = {cid: v for cid, (_, v) in reference.items()}
    rhos, differ, ties = [], 0, 0
    for keys in by_instr.values():
        keys.sort()
        if len(keys) > 1:
            rhos.append(spearman([ref[k] for k in keys], [other[k] for k in keys]))
        p_ref = min(keys, key=lambda k: (-ref[k], k))
        p_other = min(keys, key=lambda k: (-other[k], k))
        if p_ref != p_other:
            differ += 1
            ties += ref[p_ref] - ref[p_other] < tie
    compared = [k for keys in by_instr.values() for k in keys]
    return {
        "instructions": len(by_instr),
        "candidates": len(compared),
        "mean_spearman": round(sum(rhos) / len(rhos), 6) if rhos else None,
        "picks_differ": differ,
        "near_ties": ties,
        "tie_nats": tie,
        "max_abs_diff": max((abs(ref[k] - other[k]) for k in compared), default=0.0),
    }


def merge(parts: Sequence[Mapping]) -> dict | None:
    """One summary from the shards' summaries (the gather step): counts add up, the worst difference wins, the
    Spearman mean is weighted by instructions."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    rhos = [(p["mean_spearman"], p["instructions"]) for p in parts if p.get("mean_spearman") is not None]
    weight = sum(w for _, w in rhos)
    return {
        **{k: parts[0][k] for k in ("dtype", "reference_dtype", "tie_nats") if k in parts[0]},
        **{k: sum(p[k] for p in parts) for k in ("instructions", "candidates", "picks_differ", "near_ties")},
        "mean_spearman": round(sum(r * w for r, w in rhos) / weight, 6) if weight else None,
        "max_abs_diff": max(p["max_abs_diff"] for p in parts),
    }
