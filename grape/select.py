"""The `select` stage: one training set per target per arm, in prompt/completion form.

Reads: `pool/pool.jsonl` (`grape.contracts.POOL`) and, for the arms that rank by score, the target's
`scores/<target>.jsonl` (`SCORED`). Writes: `selections/<target>/<arm>.jsonl` (`SELECTION`).

Arms (`ARMS`, the paper's comparisons, UltraInteract setting):
- grape:     per instruction, the k candidates with the highest mean log-prob under the target (`select.k`: a
             number, or `original`: as many as the instruction has original responses, the paper's UltraInteract
             setting).
- reverse:   the k with the lowest (the paper's "Highest PPL" arm).
- random:    k candidates drawn uniformly (seeded per instruction, independent of file order).
- strongest: every candidate of one configured source (the paper's "405B only" distillation);
             an instruction where that source has none keeps its reference (counted as fallback).
- all:       every candidate in the pool (the "3x data" arm).
- original:  the dataset's own responses of `select.original_sources` (Tulu-3: the SFT mixture, the paper's
             "SFT-only" arm).
Ties are broken by candidate_id, so the same scores always give the same selection. Candidates the
target could not score (skipped by the overlong policy) are not eligible for grape/reverse. A selection
that ends with no example is an error naming the files it came from.

Streams: the pool is indexed once (ids, sources and byte offsets, not texts), the arm chooses on that index, and
the chosen rows are read back by offset while the selection is written, so a million-pair pool fits in memory.
Each example is written in the forms SFT tools read as they are (`example`).
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections import Counter, defaultdict
from typing import Callable, Mapping, Sequence

import orjson

from grape.config import SCORED_ARMS
from grape.contracts import POOL, SCORED
from grape.io import DataError, fast_dumps, iter_jsonl, iter_jsonl_located, write_jsonl
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
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r} (known: {', '.join(ARMS)})")
    pick, picked, counts = ARMS[arm], [], Counter()
    for iid in sorted(groups):
        cands = sorted(groups[iid], key=lambda c: c["candidate_id"])
        n = k
        if k == "original":
            n = sum(c["source"] in originals for c in cands)
            if not n:
                counts["k_original_fallback_to_1"] += 1
                n = 1
        picked += pick(Choice(iid, cands, scores, n, seed, strongest, counts, originals))
    return picked, dict(counts)


def _index(pool_path: str) -> tuple[dict[str, list[dict]], int]:
    """instruction id -> its candidates as {candidate_id, source, at (byte offset)}: the texts stay on disk."""
    groups: dict[str, list[dict]] = defaultdict(list)
    n = 0
    for _, offset, _, row in iter_jsonl_located(pool_path, POOL, unique="candidate_id", loads=orjson.loads):
        groups[sys.intern(row["instruction_id"])].append(
            {"candidate_id": row["candidate_id"], "source": sys.intern(row["source"]), "at": offset}
        )
        n += 1
    if not n:
        raise DataError(pool_path, None, None, "no rows: expected the candidate pool written by verify")
    return groups, n


def _read_scores(scores_path: str) -> dict[str, float]:
    return {
        r["candidate_id"]: float(r["mean_logprob"])
        for r in iter_jsonl(scores_path, SCORED, unique="candidate_id", loads=orjson.loads)
    }


def example(template: Template, c: Mapping, score: float | None) -> dict:
    """One training example in every form SFT tools read as they are: TRL prompt/completion, chat `messages`
    (the conversation for multi-turn instructions), alpaca-style instruction/response, and the scored text."""
    prompt, completion = template.render_prompt(c["instruction"]), template.render_response(c["response"])
    context = c.get("context") or [{"role": "user", "content": c["instruction"]}]
    row = {
        "prompt": prompt,
        "completion": completion,
        "instruction_id": c["instruction_id"],
        "candidate_id": c["candidate_id"],
        "source": c["source"],
        "instruction": c["instruction"],
        "response": c["response"],
        "mean_logprob": score,
        "messages": [*context, {"role": "assistant", "content": c["response"]}],
        "text": prompt + completion,
    }
    if c.get("task") is not None:
        row["task"] = c["task"]
    return row


def run(params: Mapping, pool_path: str, scores_path: str | None, out: str) -> dict:
    sel, arm = params["select"], params["arm"]
    template = Template.from_config(params["template"])
    if arm in SCORED_ARMS and not scores_path:
        raise ValueError(f"arm {arm!r} needs the target's scores (--scores)")
    groups, n_pool = _index(pool_path)
    scores = _read_scores(scores_path) if scores_path else {}
    originals = tuple(sel.get("original_sources") or ("original",))
    picked, counts = choose(arm, groups, scores, sel["k"], params["seed"], sel["strongest_source"], originals)
    n_instructions = len(groups)
    del groups
    if not picked:
        source = f" with the scores in {scores_path} ({len(scores)} rows)" if scores_path else ""
        raise DataError(
            pool_path,
            None,
            None,
            f"arm {arm!r} selected 0 examples from {n_pool} candidates{source}; counts: {counts or 'none'}",
        )
    by_source: Counter = Counter()

    def rows():
        with open(pool_path, "rb") as fh:
            for c in picked:
                fh.seek(c["at"])
                row = orjson.loads(fh.readline())
                by_source[row["source"]] += 1
                yield example(template, row, scores.get(row["candidate_id"]))

    n = write_jsonl(out, rows(), encode=fast_dumps)
    return {"examples": n, "instructions": n_instructions, "by_source": dict(by_source), **counts}
