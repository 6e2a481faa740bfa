"""Running one arm (a `grape.arms` plugin) over the instructions of a pool: per instruction, the number to keep and
the `Choice` the arm sees; ties are broken by candidate_id, so the same scores always give the same selection."""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

from grape import arms
from grape.arms import Choice


def choose(
    arm: str,
    groups: Mapping[str, list[dict]],
    scores: Mapping[str, float],
    k: int | str,
    seed: int,
    strongest: str | None = None,
    originals: Sequence[str] = ("original",),
) -> tuple[list[dict], dict]:
    """Pick candidates per instruction. `groups` maps instruction id -> its pool rows (at least `candidate_id` and
    `source`). `k`: a count, or "original" for as many as the instruction has responses from `originals`."""
    settings = {"k": k, "strongest_source": strongest, "original_sources": list(originals)}
    picked, counts = choose_ids(arm, sorted(groups), groups, scores, seed, settings)
    return [c for _, c in picked], counts


def choose_ids(arm: str, iids, groups, scores, seed: int, settings: Mapping) -> tuple[list[tuple[str, dict]], dict]:
    """`choose` on the instructions `iids` (in that order), with the arm's settings (its `select` slice): (instruction
    id, candidate) pairs and the counts."""
    plugin, picked, counts = arms.get(arm), [], Counter()
    reads = lambda key: settings[key] if key in plugin.READS else None  # a missing key it reads: the config's error
    k, originals = reads("k"), tuple(reads("original_sources") or ("original",))
    for iid in iids:
        cands = sorted(groups[iid], key=lambda c: c["candidate_id"])
        n = k
        if k == "original":
            n = sum(c["source"] in originals for c in cands)
            if not n:
                counts["k_original_fallback_to_1"] += 1
                n = 1
        picked.extend((iid, c) for c in plugin.choose(Choice(iid, cands, scores, n, seed, settings, counts)))
    return picked, dict(counts)
