"""The `select` stage: one training set per target per arm, in prompt/completion form.

Reads: `pool/pool.jsonl` (`grape.contracts.POOL`) and, for the arms that rank by score, the target's
`scores/<target>.jsonl` (`SCORED`). Writes: `selections/<target>/<arm>.jsonl` (`SELECTION`).

Arms (`ARMS`, the paper's comparisons, UltraInteract setting):
- grape:     per instruction, the k candidates with the highest mean log-prob under the target.
- reverse:   the k with the lowest (the paper's "Highest PPL" arm).
- random:    k candidates drawn uniformly (seeded per instruction, independent of file order).
- strongest: every candidate of one configured source (the paper's "405B only" distillation);
             an instruction where that source has none keeps its reference (counted as fallback).
- all:       every candidate in the pool (the "3x data" arm).
- original:  the dataset's reference responses.
Ties are broken by candidate_id, so the same scores always give the same selection. Candidates the
target could not score (skipped by the overlong policy) are not eligible for grape/reverse. A selection
that ends with no example is an error naming the files it came from.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from typing import Callable, Mapping

from grape.config import SCORED_ARMS
from grape.contracts import POOL, SCORED
from grape.io import DataError, read_jsonl, write_jsonl
from grape.template import Template


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
    ):
        self.iid, self.cands, self.scores, self.k, self.seed = iid, cands, scores, k, seed
        self.strongest, self.counts = strongest, counts


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
        mine = [x for x in c.cands if x["source"] == "original"]
    return mine


# arm -> function(Choice) -> the candidates it keeps for that instruction
ARMS: dict[str, Callable[[Choice], list[dict]]] = {
    "grape": lambda c: _ranked(c, -1.0),
    "reverse": lambda c: _ranked(c, 1.0),
    "random": lambda c: _rng(c.seed, c.iid).sample(c.cands, min(c.k, len(c.cands))),
    "strongest": _strongest,
    "all": lambda c: c.cands,
    "original": lambda c: [x for x in c.cands if x["source"] == "original"],
}


def choose(
    arm: str, groups: Mapping[str, list[dict]], scores: Mapping[str, float], k: int, seed: int, strongest: str | None
) -> tuple[list[dict], dict]:
    """Pick candidates per instruction. `groups` maps instruction id -> its pool rows."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r} (known: {', '.join(ARMS)})")
    pick, picked, counts = ARMS[arm], [], Counter()
    for iid in sorted(groups):
        cands = sorted(groups[iid], key=lambda c: c["candidate_id"])
        picked += pick(Choice(iid, cands, scores, k, seed, strongest, counts))
    return picked, dict(counts)


def run(params: Mapping, pool_path: str, scores_path: str | None, out: str) -> dict:
    sel, arm = params["select"], params["arm"]
    template = Template.from_config(params["template"])
    pool = read_jsonl(pool_path, POOL, unique="candidate_id", non_empty="the candidate pool written by verify")
    if arm in SCORED_ARMS and not scores_path:
        raise ValueError(f"arm {arm!r} needs the target's scores (--scores)")
    scores = (
        {r["candidate_id"]: float(r["mean_logprob"]) for r in read_jsonl(scores_path, SCORED, unique="candidate_id")}
        if scores_path
        else {}
    )
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in pool:
        groups[row["instruction_id"]].append(row)
    picked, counts = choose(arm, groups, scores, sel["k"], params["seed"], sel["strongest_source"])
    if not picked:
        source = f" with the scores in {scores_path} ({len(scores)} rows)" if scores_path else ""
        raise DataError(
            pool_path,
            None,
            None,
            f"arm {arm!r} selected 0 examples from {len(pool)} candidates{source}; counts: {counts or 'none'}",
        )
    rows = [
        {
            "prompt": template.render_prompt(c["instruction"]),
            "completion": template.render_response(c["response"]),
            "instruction_id": c["instruction_id"],
            "candidate_id": c["candidate_id"],
            "source": c["source"],
            "instruction": c["instruction"],
            "response": c["response"],
            "mean_logprob": scores.get(c["candidate_id"]),
        }
        for c in picked
    ]
    write_jsonl(out, rows)
    by_source = Counter(r["source"] for r in rows)
    return {"examples": len(rows), "instructions": len(groups), "by_source": dict(by_source), **counts}
