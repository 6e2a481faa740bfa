"""The arms: what each one keeps of one instruction's candidates (`ARMS`, the schema's `select.arms` enum).

Ties are broken by candidate_id, so the same scores always give the same selection; `random` draws with a seed per
instruction, so the draw does not depend on file order or on how the pool was split between processes.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from typing import Callable, Mapping, Sequence


class Choice:
    """What one arm sees for one instruction: its candidates (sorted by id) and the run's settings."""

    def __init__(
        self,
        iid: str,
        cands: list[dict],
        scores: Mapping[str, float],
        k: int,
        seed: int,
        strongest: str | None,
        counts: Counter,
        originals: Sequence[str] = ("original",),
    ):
        self.iid, self.cands, self.scores, self.k, self.seed = iid, cands, scores, k, seed
        self.strongest, self.counts, self.originals = strongest, counts, originals


def _ranked(c: Choice, sign: float) -> list[dict]:
    scored = [x for x in c.cands if x["candidate_id"] in c.scores]
    if len(scored) < len(c.cands):
        c.counts["unscored_candidates"] += len(c.cands) - len(scored)
    if not scored:
        c.counts["instructions_without_scores"] += 1
        return []
    scored.sort(key=lambda x: (sign * c.scores[x["candidate_id"]], x["candidate_id"]))
    return scored[: c.k]


def _rng(seed: int, instruction_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{instruction_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _strongest(c: Choice) -> list[dict]:
    mine = [x for x in c.cands if x["source"] == c.strongest]
    if not mine:
        c.counts["fallback_to_original"] += 1
        mine = [x for x in c.cands if x["source"] in c.originals]
    return mine


# arm -> function(Choice) -> the candidates it keeps for that instruction
ARMS: dict[str, Callable[[Choice], list[dict]]] = {
    "grape": lambda c: _ranked(c, -1.0),
    "reverse": lambda c: _ranked(c, 1.0),
    "random": lambda c: _rng(c.seed, c.iid).sample(c.cands, min(c.k, len(c.cands))),
    "strongest": _strongest,
    "all": lambda c: c.cands,
    "original": lambda c: [x for x in c.cands if x["source"] in c.originals],
    "self": lambda c: _ranked(c, -1.0),  # on the target's own samples only (select.run keeps just those)
}


def choose(
    arm: str,
    groups: Mapping[str, list[dict]],
    scores: Mapping[str, float],
    k: int | str,
    seed: int,
    strongest: str | None,
    originals: Sequence[str] = ("original",),
) -> tuple[list[dict], dict]:
    """Pick candidates per instruction. `groups` maps instruction id -> its pool rows (at least `candidate_id` and
    `source`). `k`: a count, or "original" for as many as the instruction has responses from `originals`."""
    picked, counts = choose_ids(arm, sorted(groups), groups, scores, k, seed, strongest, originals)
    return [c for _, c in picked], counts


def choose_ids(arm, iids, groups, scores, k, seed, strongest, originals) -> tuple[list[tuple[str, dict]], dict]:
    """`choose` on the instructions `iids` (in that order): (instruction id, candidate) pairs and the counts."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r} (known: {', '.join(ARMS)})")
    pick, picked, counts = ARMS[arm], [], Counter()
    for iid in iids:
        cands = sorted(groups[iid], key=lambda c: c["candidate_id"])
        n = k
        if k == "original":
            n = sum(c["source"] in originals for c in cands)
            if not n:
                counts["k_original_fallback_to_1"] += 1
                n = 1
        picked.extend((iid, c) for c in pick(Choice(iid, cands, scores, n, seed, strongest, counts, originals)))
    return picked, dict(counts)
