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
memory holds one small record per instruction (answer, rule) and the candidate ids, not the texts. Each file is
cut into one byte range per core the job has (`grape.parallel`); the pool is the same for any number of them.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Iterator, Mapping, NamedTuple

import orjson

from grape.answers import extract_answer, matches, normalise_reference, rule
from grape.contracts import CANDIDATE, POOL, TRAIN, TRAIN_RESPONSE
from grape.io import DataError, atomic_path, check_row, fast_dumps, iter_jsonl_located, write_json
from grape.parallel import Range, absolute_line, concat, guarded, ranges, starmap, workers

POOL_FIELDS = [f for f in POOL if f not in ("correct", "task", "context", "answer")]  # copied from a candidate row
NEEDS_ANSWER = "verify.drop_incorrect compares each candidate's final answer with it"
COLUMNS = ("generated", "correct", "dropped_empty", "dropped_no_answer", "dropped_wrong", "dropped_unverifiable")


class Reference(NamedTuple):
    """What verify keeps of one instruction: its answer (and that answer normalised once), answer rule, task and
    context. A tuple, so the workers that read the train file hand it back to the parent cheaply."""

    answer: str | None
    check: str | None
    task: str | None
    context: list | None
    expected: str | None

    @classmethod
    def of(cls, row: Mapping, keep_context: bool) -> "Reference":
        answer = None if row.get("answer") is None else str(row["answer"])
        check = row.get("check")
        expected = None if answer is None else normalise_reference(answer, check)
        return cls(answer, check, row.get("task"), row.get("context") if keep_context else None, expected)

    def extra(self) -> dict:
        out = {"answer": self.answer, "task": self.task, "context": self.context}
        return {k: v for k, v in out.items() if v is not None}

    def verifiable(self) -> bool:
        return self.answer is not None and rule(self.check) is not None

    def correct(self, response: str) -> bool | None:
        """Whether `response` has the reference answer; None when there is nothing to compare."""
        return matches(response, self.expected, self.check) if self.verifiable() else None


_REFS: dict[str, Reference] = {}  # instruction id -> Reference, set before the candidate workers fork


def _write_part(rows: Iterator[dict], out: str) -> int:
    n = 0
    with open(out, "wb", buffering=1 << 20) as fh:
        for row in rows:
            fh.write(fast_dumps(row) + b"\n")
            n += 1
    return n


def _train_part(part: Range, out: str, drop: bool, unverifiable: str, keep_ctx: bool):
    """One byte range of the train file: its originals' pool rows to `out`; (refs with lines, counts, rows)."""
    refs: dict[str, tuple[Reference, int]] = {}
    counts: dict[str, Counter] = {}

    def rows():
        for lineno, _, _, row in iter_jsonl_located(part.path, TRAIN, unique="id", loads=orjson.loads, part=part):
            ref = Reference.of(row, keep_ctx)
            refs[row["id"]] = (ref, lineno)
            if drop and unverifiable == "error" and not ref.verifiable():
                why = "answer rule 'none' cannot compare answers" if ref.answer is not None else "missing"
                raise DataError(
                    part.path, lineno, "answer", f"{why} ({NEEDS_ANSWER}; or set verify.unverifiable: keep | drop)"
                )
            extra = {**ref.extra(), **({"context": row["context"]} if row.get("context") else {})}
            per_source: Counter = Counter()
            for item in row["responses"]:
                check_row(part.path, lineno, item, TRAIN_RESPONSE)
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

    n = _write_part(rows(), out)
    return refs, counts, n


def _candidate_part(part: Range, out: str, drop: bool, unverifiable: str):
    """One byte range of a candidates file: its kept rows to `out`; (counts, candidate ids with lines, rows read)."""
    counts: dict[str, Counter] = {}
    ids: list[tuple[str, int]] = []

    def rows():
        for lineno, _, _, cand in iter_jsonl_located(part.path, CANDIDATE, loads=orjson.loads, part=part):
            ids.append((cand["candidate_id"], lineno))
            c = counts.setdefault(cand["source"], Counter())
            c["generated"] += 1
            ref = _REFS.get(cand["instruction_id"])
            if ref is None:
                raise DataError(
                    part.path,
                    lineno,
                    "instruction_id",
                    f"candidate {cand['candidate_id']} names unknown instruction {cand['instruction_id']!r}",
                )
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

    _write_part(rows(), out)
    return counts, ids


def _merge(total: dict[str, Counter], counts: dict[str, Counter]) -> None:
    for src, c in counts.items():
        total.setdefault(src, Counter()).update(c)


def run(params: Mapping, train_path: str, candidate_paths: list[str], out: str, counts_out: str) -> dict:
    v = params["verify"]
    drop, unverifiable = v["drop_incorrect"], v.get("unverifiable", "error")
    n_workers = workers(params.get("threads"))
    counts: dict[str, Counter] = {}
    _REFS.clear()
    with atomic_path(out) as tmp:
        parts = []
        ranges_ = ranges(train_path, n_workers)
        calls = [
            (_train_part, r, f"{tmp}.train{i}", drop, unverifiable, bool(candidate_paths))
            for i, r in enumerate(ranges_)
        ]
        for (refs, c, _), call in zip(starmap(guarded, calls), calls):
            for iid, (ref, lineno) in refs.items():
                if iid in _REFS:
                    raise DataError(train_path, absolute_line(call[1], lineno), "id", f"duplicate id {iid!r}")
                _REFS[sys.intern(iid)] = ref
            _merge(counts, c)
        parts += [call[2] for call in calls]
        if not _REFS:
            raise DataError(train_path, None, None, "no rows: expected the train instructions")
        seen: set[str] = set()
        for k, path in enumerate(candidate_paths):
            calls = [
                (_candidate_part, r, f"{tmp}.cand{k}.{i}", drop, unverifiable)
                for i, r in enumerate(ranges(path, n_workers))
            ]
            n = 0
            for (c, ids), call in zip(starmap(guarded, calls), calls):
                _merge(counts, c)
                for cid, lineno in ids:
                    if cid in seen:
                        line = absolute_line(call[1], lineno)
                        raise DataError(path, line, "candidate_id", f"duplicate candidate_id {cid!r} (across files)")
                    seen.add(cid)
                n += len(ids)
            if not n:
                raise DataError(
                    path,
                    None,
                    None,
                    "no rows: expected the sample stage's candidates (one row per instruction x sample)",
                )
            parts += [call[2] for call in calls]
        concat(parts, tmp)
    _REFS.clear()
    n = sum(c["kept"] for c in counts.values())
    table = [
        {"source": src, **{k: c[k] for k in COLUMNS}, "unverified_kept": c["unverified_kept"], "kept": c["kept"]}
        for src, c in counts.items()
    ]
    write_json(counts_out, table)
    return {"pool": n, "by_source": table, "workers": n_workers}
