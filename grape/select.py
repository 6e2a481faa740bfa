"""The `select` stage: one training set per target per arm, in prompt/completion form.

Arms (the paper's comparisons, UltraInteract setting):
- grape:     per instruction, the k candidates with the highest mean log-prob under the target.
- reverse:   the k with the lowest (the paper's "Highest PPL" arm).
- random:    k candidates drawn uniformly (seeded per instruction, independent of file order).
- strongest: every candidate of one configured source (the paper's "405B only" distillation);
             an instruction where that source has none keeps its reference (counted as fallback).
- all:       every candidate in the pool (the "3x data" arm).
- original:  the dataset's reference responses.
Ties are broken by candidate_id, so the same scores always give the same selection. Candidates the
target could not score (skipped by the overlong policy) are not eligible for grape/reverse.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from typing import Mapping

from grape.io import read_jsonl, write_jsonl
from grape.template import Template
from grape.verify import POOL_SPEC

SCORE_SPEC = {"candidate_id": ((str,), True, True), "mean_logprob": ((float, int), True, False),
              "n_tokens": ((int,), True, False)}
ARMS = ("grape", "reverse", "random", "strongest", "all", "original")


def _rng(seed: int, instruction_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{instruction_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def choose(arm: str, groups: Mapping[str, list[dict]], scores: Mapping[str, float], k: int, seed: int,
           strongest: str | None) -> tuple[list[dict], dict]:
    """Pick candidates per instruction. `groups` maps instruction id -> its pool rows."""
    picked, counts = [], defaultdict(int)
    for iid in sorted(groups):
        cands = sorted(groups[iid], key=lambda c: c["candidate_id"])
        if arm in ("grape", "reverse"):
            scored = [c for c in cands if c["candidate_id"] in scores]
            if len(scored) < len(cands):
                counts["unscored_candidates"] += len(cands) - len(scored)
            if not scored:
                counts["instructions_without_scores"] += 1
                continue
            sign = -1.0 if arm == "grape" else 1.0
            scored.sort(key=lambda c: (sign * scores[c["candidate_id"]], c["candidate_id"]))
            picked += scored[:k]
        elif arm == "random":
            picked += _rng(seed, iid).sample(cands, min(k, len(cands)))
        elif arm == "strongest":
            mine = [c for c in cands if c["source"] == strongest]
            if not mine:
                counts["fallback_to_original"] += 1
                mine = [c for c in cands if c["source"] == "original"]
            picked += mine
        elif arm == "all":
            picked += cands
        elif arm == "original":
            picked += [c for c in cands if c["source"] == "original"]
        else:
            raise ValueError(f"unknown arm {arm!r}")
    return picked, dict(counts)


def run(params: Mapping, pool_path: str, scores_path: str | None, out: str) -> dict:
    sel, arm = params["select"], params["arm"]
    template = Template.from_config(params["template"])
    pool = read_jsonl(pool_path, POOL_SPEC, unique="candidate_id")
    if arm in ("grape", "reverse") and not scores_path:
        raise ValueError(f"arm {arm!r} needs the target's scores (--scores)")
    scores = {r["candidate_id"]: float(r["mean_logprob"])
              for r in read_jsonl(scores_path, SCORE_SPEC, unique="candidate_id")} if scores_path else {}
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in pool:
        groups[row["instruction_id"]].append(row)
    picked, counts = choose(arm, groups, scores, sel["k"], params["seed"], sel["strongest_source"])
    rows = [{"prompt": template.render_prompt(c["instruction"]), "completion": template.render_response(c["response"]),
             "instruction_id": c["instruction_id"], "candidate_id": c["candidate_id"], "source": c["source"],
             "instruction": c["instruction"], "response": c["response"],
             "mean_logprob": scores.get(c["candidate_id"])} for c in picked]
    write_jsonl(out, rows)
    by_source: dict[str, int] = defaultdict(int)
    for r in rows:
        by_source[r["source"]] += 1
    return {"examples": len(rows), "instructions": len(groups), "by_source": dict(by_source), **counts}
