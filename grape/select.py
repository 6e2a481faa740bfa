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
Indexing, reading the scores and writing run in one process per core the job has (`grape.parallel`); the
selection is the same file for any number of them.
Each example is written in the forms SFT tools read as they are (`example`).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from typing import Callable, Mapping, Sequence

import orjson

from grape.config import SCORED_ARMS
from grape.contracts import POOL, SCORED
from grape.io import DataError, atomic_path, fast_dumps, iter_jsonl_located
from grape.parallel import Range, concat, guarded, ranges, starmap, workers
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
    return _choose_ids(arm, sorted(groups), groups, scores, k, seed, strongest, originals)


def _choose_ids(arm, iids, groups, scores, k, seed, strongest, originals) -> tuple[list[dict], dict]:
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
        picked += pick(Choice(iid, cands, scores, n, seed, strongest, counts, originals))
    return picked, dict(counts)


def _index_part(part: Range) -> tuple[dict[str, list[dict]], int]:
    """One byte range of the pool: instruction id -> its candidates {candidate_id, source, at (byte offset)}."""
    groups: dict[str, list[dict]] = {}
    n = 0
    for _, offset, _, row in iter_jsonl_located(part.path, POOL, unique="candidate_id", loads=orjson.loads, part=part):
        cand = {"candidate_id": row["candidate_id"], "source": row["source"], "at": offset}
        have = groups.get(row["instruction_id"])
        if have is None:
            groups[row["instruction_id"]] = [cand]
        else:
            have.append(cand)
        n += 1
    return groups, n


def _index(pool_path: str, n_workers: int) -> tuple[dict[str, list[dict]], int]:
    """instruction id -> its candidates as {candidate_id, source, at (byte offset)}: the texts stay on disk."""
    parts = ranges(pool_path, n_workers)
    results = starmap(guarded, [(_index_part, r) for r in parts])
    groups, n = results[0]
    for more, m in results[1:]:  # an instruction's rows can sit in two ranges: join them in file order
        for iid, cands in more.items():
            have = groups.get(iid)
            if have is None:
                groups[iid] = cands
            else:
                have.extend(cands)
        n += m
    if not n:
        raise DataError(pool_path, None, None, "no rows: expected the candidate pool written by verify")
    if len(parts) > 1:  # ids are unique within each range; check across them
        seen: set[str] = set()
        for cands in groups.values():
            for c in cands:
                if c["candidate_id"] in seen:
                    raise DataError(pool_path, None, "candidate_id", f"duplicate id {c['candidate_id']!r}")
                seen.add(c["candidate_id"])
    return groups, n


def _scores_part(part: Range) -> dict[str, float]:
    return {
        r["candidate_id"]: float(r["mean_logprob"])
        for _, _, _, r in iter_jsonl_located(part.path, SCORED, unique="candidate_id", loads=orjson.loads, part=part)
    }


def _read_scores(scores_path: str, n_workers: int) -> dict[str, float]:
    results = starmap(guarded, [(_scores_part, r) for r in ranges(scores_path, n_workers)])
    scores = results[0]
    for more in results[1:]:
        dup = next((cid for cid in more if cid in scores), None)
        if dup is not None:
            raise DataError(scores_path, None, "candidate_id", f"duplicate id {dup!r}")
        scores.update(more)
    return scores


# Set before the chooser and writer processes fork, read by them, cleared after: shared, never pickled.
_PICKED: list[dict] = []
_SCORES: dict[str, float] = {}
_GROUPS: dict[str, list[dict]] = {}
_IIDS: list[str] = []


def _choose_part(lo: int, hi: int, arm: str, k, seed: int, strongest, originals) -> tuple[list[dict], dict]:
    return _choose_ids(arm, _IIDS[lo:hi], _GROUPS, _SCORES, k, seed, strongest, originals)


def _slices(n: int, k: int) -> list[tuple[int, int]]:
    cuts = [n * i // k for i in range(k + 1)]
    return list(zip(cuts, cuts[1:]))


def _write_part(pool_path: str, lo: int, hi: int, template_cfg: Mapping, out: str) -> Counter:
    """Examples `_PICKED[lo:hi]` to `out`, read back from the pool by byte offset; returns them by source."""
    template, by_source = Template.from_config(template_cfg), Counter()
    with open(pool_path, "rb") as fh, open(out, "wb", buffering=1 << 20) as dst:
        for c in _PICKED[lo:hi]:
            fh.seek(c["at"])
            row = orjson.loads(fh.readline())
            by_source[row["source"]] += 1
            dst.write(fast_dumps(example(template, row, _SCORES.get(row["candidate_id"]))) + b"\n")
    return by_source


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
    Template.from_config(params["template"])  # a bad template stops the job before the pool is read
    if arm in SCORED_ARMS and not scores_path:
        raise ValueError(f"arm {arm!r} needs the target's scores (--scores)")
    n_workers = workers(params.get("threads"))
    groups, n_pool = _index(pool_path, n_workers)
    scores = _read_scores(scores_path, n_workers) if scores_path else {}
    originals = tuple(sel.get("original_sources") or ("original",))
    n_instructions = len(groups)
    _GROUPS.update(groups)
    _SCORES.update(scores)
    _IIDS.extend(sorted(groups))
    del groups, scores
    try:
        k = n_workers if n_instructions >= 20_000 else 1  # a small pool is not worth a fork
        calls = [
            (a, b, arm, sel["k"], params["seed"], sel["strongest_source"], originals)
            for a, b in _slices(n_instructions, k)
        ]
        picked, counts = [], Counter()
        for part, c in starmap(_choose_part, calls):
            picked += part
            counts.update(c)
        counts = dict(counts)
        _GROUPS.clear()
        _IIDS.clear()
        if not picked:
            source = f" with the scores in {scores_path} ({len(_SCORES)} rows)" if scores_path else ""
            raise DataError(
                pool_path,
                None,
                None,
                f"arm {arm!r} selected 0 examples from {n_pool} candidates{source}; counts: {counts or 'none'}",
            )
        _PICKED.extend(picked)
        by_source: Counter = Counter()
        with atomic_path(out) as tmp:
            k = n_workers if len(picked) >= 20_000 else 1  # a small selection is not worth a fork
            calls = [
                (pool_path, a, b, params["template"], f"{tmp}.{i}") for i, (a, b) in enumerate(_slices(len(picked), k))
            ]
            for part in starmap(_write_part, calls):
                by_source.update(part)
            concat([call[-1] for call in calls], tmp)
    finally:
        for state in (_PICKED, _SCORES, _GROUPS, _IIDS):
            state.clear()
    return {
        "examples": len(picked),
        "instructions": n_instructions,
        "by_source": dict(by_source),
        **counts,
        "workers": n_workers,
    }
