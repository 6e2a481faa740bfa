"""The `select` stage: one training set per target per arm, in prompt/completion form.

Reads: `pool/pool.jsonl` (`grape.contracts.POOL`) and, for the arms that rank by score, the target's
`scores/<target>/<scorer>.jsonl` (`SCORED`; scorer `base`, or the previous round's GRAPE model for `grape.r<N>`). Writes: `selections/<target>/<arm>.jsonl` (`SELECTION`). Every row is checked
where it enters: a pool row that is not a POOL row (a blank or non-string response, ...), an impossible score (a
log-prob above 0, NaN, Infinity, fewer than one token) or a score of a candidate the pool does not have stops the
job with `file:line: field 'x': problem` (`index`); nothing is skipped silently.

Arms are plugins (`grape.arms`: one module each, found by name; `grape plugins arm` lists every one with what it
ranks by and reads). The job's params hold only its arm's settings
(the `select` keys the arm `READS`, and `select.options.<arm>`). A target that is also a source never selects its
own samples in the other arms (`select.exclude_self`, the default; counted as `own_samples_excluded`); an arm
declared `ONLY_OWN` (`self`) chooses among them only. Ties are broken by candidate_id, so the same scores always give the same selection. Candidates
the target could not score (skipped by the overlong policy) are not eligible for grape/reverse. A selection
that ends with no example is an error naming the files it came from.

Streams: the pool is indexed (ids, sources and byte offsets, not texts), the arm chooses on that index, and the
chosen rows are read back by offset while the selection is written, so a million-pair pool fits in memory. Both
halves run in one process per core the job has (contiguous slices of the sorted instruction ids, then of the
picked examples, through `grape.parallel`); the selection is the same file for any number of them.
Each example is written in the forms SFT tools read as they are (`example`).
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

from grape import arms
from grape.arms import Choice
from grape.contracts import REWARD, SCORED
from grape.io import DataError, atomic_path, fast_dumps
from grape.parallel import concat, starmap, workers
from grape.select import index
from grape.select.choosing import choose_ids
from grape.template import Template

__all__ = ["Choice", "choose", "example", "run"]

MIN_PARALLEL = 20_000  # instructions or examples below which a fork costs more than it saves
_PICKED: list[tuple] = []  # (iid, cid, byte offset, score), set before the writers fork and cleared after


def _slices(n: int, k: int) -> list[tuple[int, int]]:
    cuts = [n * i // k for i in range(k + 1)]
    return list(zip(cuts, cuts[1:]))


def _write_part(pool_path: str, lo: int, hi: int, template_cfg: Mapping, out: str, field: str) -> Counter:
    """Examples `_PICKED[lo:hi]` to `out`, read back from the pool by byte offset, each with its score as `field`;
    returns them by source."""
    template, by_source = Template.from_config(template_cfg), Counter()
    with open(pool_path, "rb") as fh, open(out, "wb", buffering=1 << 20) as dst:
        for _, _, at, score in _PICKED[lo:hi]:
            fh.seek(at)
            row = index.checked_row(pool_path, fh.readline(), at)
            by_source[row["source"]] += 1
            dst.write(fast_dumps(example(template, row, score, field)) + b"\n")
    return by_source


def example(template: Template, c: Mapping, score: float | None, field: str = "mean_logprob") -> dict:
    """One training example in the forms SFT tools read as they are: prompt/completion (TRL's prompt-completion
    form: the scored `Question:/Answer:` text, split where the loss starts) and chat `messages` (TRL conversational,
    open-instruct, LLaMA-Factory; the whole conversation for a multi-turn instruction). `score` is the target's mean
    log-prob (`field` mean_logprob), or a reward model's (`field` reward: mean_logprob is then null)."""
    prompt, completion = template.render_prompt(c["instruction"]), template.render_response(c["response"])
    context = c.get("context") or [{"role": "user", "content": c["instruction"]}]
    row = {
        "prompt": prompt,
        "completion": completion,
        "instruction_id": c["instruction_id"],
        "candidate_id": c["candidate_id"],
        "source": c["source"],
        "mean_logprob": score if field == "mean_logprob" else None,
        **({field: score} if field != "mean_logprob" else {}),
        "messages": [*context, {"role": "assistant", "content": c["response"]}],
    }
    if c.get("task") is not None:
        row["task"] = c["task"]
    return row


_GROUPS: dict[str, list[dict]] = {}  # the index and scores, set before the choosers fork
_SCORES: dict[str, float] = {}
_IIDS: list[str] = []


def _choose_part(lo: int, hi: int, arm: str, seed: int, settings: Mapping) -> tuple[list[tuple], dict]:
    picked, counts = choose_ids(arm, _IIDS[lo:hi], _GROUPS, _SCORES, seed, settings)
    return [(iid, c["candidate_id"], c["at"], _SCORES.get(c["candidate_id"])) for iid, c in picked], counts


def _own_samples(groups: dict, target: str | None, only_own: bool, exclude: bool) -> tuple[dict, dict]:
    """A target is not among the sources it selects from (`select.exclude_self`): choosing its own samples is
    self-distillation, which the paper's Table 4 shows hurts, not GRAPE's choice among other models' responses.
    An arm declared `ONLY_OWN` (`self`) keeps only those samples instead. Returns the groups left and what was taken
    out (counted)."""
    if not target or (not only_own and not exclude):
        return groups, {}
    keep = (lambda c: c["source"] == target) if only_own else (lambda c: c["source"] != target)
    out, removed, emptied = {}, 0, 0
    for iid, cands in groups.items():
        left = [c for c in cands if keep(c)]
        removed += len(cands) - len(left)
        if left:
            out[iid] = left
        else:
            emptied += 1
    key = "candidates_not_the_targets_own" if only_own else "own_samples_excluded"
    return out, {key: removed, "instructions_left_without_candidates": emptied}


def run(params: Mapping, pool_path: str, scores_path: str | None, out: str) -> dict:
    sel, arm = params["select"], params["arm"]
    plugin = arms.get(arm)
    Template.from_config(params["template"])  # a bad template stops the job before the pool is read
    ranks_by = arms.ranks_by(arm)
    if ranks_by and not scores_path:
        raise ValueError(
            f"arm {arm!r} needs the {'target' if ranks_by == 'scores' else 'reward model'}'s {ranks_by} (--scores)"
        )
    n_workers = workers(params.get("threads"))
    settings = (arm, params["seed"], sel)
    try:
        known: set[str] = set()
        groups, n_pool = index.pool_index(pool_path, known)
        only_own = getattr(plugin, "ONLY_OWN", False)
        groups, own = _own_samples(groups, params.get("target"), only_own, bool(sel.get("exclude_self")))
        _GROUPS.update(groups)
        spec = (REWARD, "reward") if ranks_by == "rewards" else (SCORED, "mean_logprob")
        _SCORES.update(index.scores(scores_path, known, pool_path, *spec) if scores_path else {})
        del known
        _IIDS.extend(sorted(groups))
        del groups
        k = n_workers if len(_IIDS) >= MIN_PARALLEL else 1  # a small pool is not worth a fork
        counts: Counter = Counter()
        for part, c in starmap(_choose_part, [(a, b, *settings) for a, b in _slices(len(_IIDS), k)]):
            _PICKED.extend(part)
            counts.update(c)
        counts = {**dict(counts), **own}
        n_instructions, n_scores = len(_IIDS), len(_SCORES)
        for state in (_GROUPS, _SCORES, _IIDS):
            state.clear()
        if not _PICKED:
            source = f" with the scores in {scores_path} ({n_scores} rows)" if scores_path else ""
            raise DataError(
                pool_path,
                None,
                None,
                f"arm {arm!r} selected 0 examples from {n_pool} candidates{source}; counts: {counts or 'none'}",
            )
        by_source: Counter = Counter()
        with atomic_path(out) as tmp:
            k = n_workers if len(_PICKED) >= MIN_PARALLEL else 1  # a small selection is not worth a fork
            calls = [
                (pool_path, a, b, params["template"], f"{tmp}.{i}", spec[1])
                for i, (a, b) in enumerate(_slices(len(_PICKED), k))
            ]
            for part in starmap(_write_part, calls):
                by_source.update(part)
            concat([call[4] for call in calls], tmp)
        n = len(_PICKED)
    finally:
        for state in (_PICKED, _GROUPS, _SCORES, _IIDS):
            state.clear()
    return {"examples": n, "instructions": n_instructions, "by_source": dict(by_source), **counts, "workers": n_workers}
