"""Running one arm (a `grape.arms` plugin) over the instructions of a pool: per instruction, the number to keep and
the `Choice` the arm sees; ties are broken by candidate_id, so the same scores always give the same selection."""

from __future__ import annotations

from collections import Counter
from typing import Mapping

from grape import arms
from grape.arms import Choice


def choose_ids(arm: str, iids, groups, scores, seed: int, settings: Mapping) -> tuple[list[tuple[str, dict]], dict]:
    """One arm over the instructions `iids` (in that order; `groups`: instruction id -> its pool rows), with the
    arm's settings (its `select` slice): (instruction id, candidate) pairs and the counts."""
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
