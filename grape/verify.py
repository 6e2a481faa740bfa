"""The `verify` stage: build the candidate pool and drop candidates whose final answer is wrong.

Reads: `data/train.jsonl` (`grape.contracts.TRAIN`) and every source's `candidates/<source>.jsonl`
(`CANDIDATE`). Writes: `pool/pool.jsonl` (`POOL`) and `pool/verify_counts.json` (per source: generated,
correct, dropped by reason, kept).

The paper filters UltraInteract's new responses against the reference answers before GRAPE picks among them.
The dataset's own responses join the pool under their own source (`original`, or the dataset they came from), so
an instruction left with no correct model candidate keeps its references. Each instruction's answer rule (its
train row's `check`, `grape.answers`) decides how answers compare. Candidates that cannot be checked (no reference
answer, or rule `none`: code) follow `verify.unverifiable`: error (the default), keep or drop, counted either way.
Every dropped candidate is counted per source and reason; nothing leaves silently. An empty candidates file is an
error (the sample stage wrote nothing); a source whose every candidate was dropped shows as `kept: 0`.

Streams: the train file and each candidates file are read once, row by row, and the pool is written as it goes;
memory holds one small record per instruction (answer, rule) and the candidate ids, not the texts.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Iterator, Mapping

import orjson

from grape.answers import extract_answer, matches, normalise_reference, rule
from grape.contracts import CANDIDATE, POOL, TRAIN, TRAIN_RESPONSE
from grape.io import DataError, check_row, fast_dumps, iter_jsonl_located, write_json, write_jsonl

POOL_FIELDS = [f for f in POOL if f not in ("correct", "task", "context", "answer")]  # copied from a candidate row
NEEDS_ANSWER = "verify.drop_incorrect compares each candidate's final answer with it"
COLUMNS = ("generated", "correct", "dropped_empty", "dropped_no_answer", "dropped_wrong", "dropped_unverifiable")


class Reference:
    """What verify keeps of one instruction: its answer (normalised once), answer rule, task and context."""

    __slots__ = ("answer", "check", "task", "context", "expected")

    def __init__(self, row: Mapping, keep_context: bool):
        self.answer = None if row.get("answer") is None else str(row["answer"])
        self.check = row.get("check")
        self.task = row.get("task")
        self.context = row.get("context") if keep_context else None
        self.expected = None if self.answer is None else normalise_reference(self.answer, self.check)

    def correct(self, response: str) -> bool | None:
        """Whether `response` has the reference answer; None when there is nothing to compare."""
        return matches(response, self.expected, self.check) if self.verifiable() else None

    def extra(self) -> dict:
        out = {"answer": self.answer, "task": self.task, "context": self.context}
        return {k: v for k, v in out.items() if v is not None}

    def verifiable(self) -> bool:
        return self.answer is not None and rule(self.check) is not None


def _originals(
    train_path: str, refs: dict, counts: dict, drop: bool, unverifiable: str, keep_ctx: bool
) -> Iterator[dict]:
    """The pool rows of the dataset's own responses, while filling `refs` (instruction id -> Reference)."""
    for lineno, _, _, row in iter_jsonl_located(train_path, TRAIN, unique="id", loads=orjson.loads):
        ref = refs[sys.intern(row["id"])] = Reference(row, keep_ctx)
        if drop and unverifiable == "error" and not ref.verifiable():
            why = "answer rule 'none' cannot compare answers" if ref.answer is not None else "missing"
            raise DataError(
                train_path, lineno, "answer", f"{why} ({NEEDS_ANSWER}; or set verify.unverifiable: keep | drop)"
            )
        extra = {**ref.extra(), **({"context": row["context"]} if row.get("context") else {})}
        per_source: Counter = Counter()
        for item in row["responses"]:
            check_row(train_path, lineno, item, TRAIN_RESPONSE)
            src = item["source"]
            c = counts.setdefault(src, Counter())
            c["generated"] += 1
            c["kept"] += 1
            ok = ref.correct(item["response"])
            c["correct"] += bool(ok)
            yield {
                "candidate_id": f"{row['id']}:{src}:{per_source[src]}",
                "instruction_id": row["id"],
                "instruction": row["instruction"],
                "response": item["response"],
                "source": src,
                "sample_index": per_source[src],
                **extra,
                "correct": ok,
            }
            per_source[src] += 1


def _candidates(path: str, refs: dict, seen: set, counts: dict, drop: bool, unverifiable: str) -> Iterator[dict]:
    n = 0
    for lineno, _, _, cand in iter_jsonl_located(path, CANDIDATE, loads=orjson.loads):
        n += 1
        c = counts.setdefault(cand["source"], Counter())
        c["generated"] += 1
        ref = refs.get(cand["instruction_id"])
        if ref is None:
            raise ValueError(
                f"{path}: candidate {cand['candidate_id']} names unknown instruction {cand['instruction_id']!r}"
            )
        if cand["candidate_id"] in seen:
            raise DataError(
                path, lineno, "candidate_id", f"duplicate candidate_id {cand['candidate_id']!r} across files"
            )
        seen.add(cand["candidate_id"])
        if not cand["response"].strip():
            c["dropped_empty"] += 1
            continue
        ok = ref.correct(cand["response"])
        c["correct"] += bool(ok)
        if drop and ok is None:
            if unverifiable == "drop":
                c["dropped_unverifiable"] += 1
                continue
            c["unverified_kept"] += 1
        elif drop and not ok:
            c["dropped_no_answer" if extract_answer(cand["response"], ref.check) is None else "dropped_wrong"] += 1
            continue
        c["kept"] += 1
        yield {**{k: cand[k] for k in POOL_FIELDS}, **ref.extra(), "correct": ok}
    if not n:
        raise DataError(
            path, None, None, "no rows: expected the sample stage's candidates (one row per instruction x sample)"
        )


def run(params: Mapping, train_path: str, candidate_paths: list[str], out: str, counts_out: str) -> dict:
    v = params["verify"]
    drop, unverifiable = v["drop_incorrect"], v.get("unverifiable", "error")
    refs: dict[str, Reference] = {}
    seen: set[str] = set()
    counts: dict[str, Counter] = {}

    def rows():
        yield from _originals(train_path, refs, counts, drop, unverifiable, keep_ctx=bool(candidate_paths))
        if not refs:
            raise DataError(train_path, None, None, "no rows: expected the train instructions")
        for path in candidate_paths:
            yield from _candidates(path, refs, seen, counts, drop, unverifiable)

    n = write_jsonl(out, rows(), encode=fast_dumps)
    table = [
        {"source": src, **{k: c[k] for k in COLUMNS}, "unverified_kept": c["unverified_kept"], "kept": c["kept"]}
        for src, c in counts.items()
    ]
    write_json(counts_out, table)
    return {"pool": n, "by_source": table}
