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
memory holds one small record per instruction (answer, rule) and the candidate ids, not the texts. Files are
parsed in C++ (`grape.columns`); a file that reader cannot take cleanly is read again row by row by the Python
reader, which writes the same pool or stops at the bad line, naming it.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Iterator, Mapping, NamedTuple

import orjson

from grape import columns
from grape.answers import extract_answer, normalise_reference, rule
from grape.contracts import CANDIDATE, POOL, TRAIN, TRAIN_RESPONSE
from grape.io import DataError, check_row, fast_dumps, iter_jsonl_located, write_json, write_jsonl

POOL_FIELDS = [f for f in POOL if f not in ("correct", "task", "context", "answer")]  # copied from a candidate row
NEEDS_ANSWER = "verify.drop_incorrect compares each candidate's final answer with it"
COLUMNS = ("generated", "correct", "dropped_empty", "dropped_no_answer", "dropped_wrong", "dropped_unverifiable")


class Reference(NamedTuple):
    """What verify keeps of one instruction: the fields its pool rows carry (answer, task, context), its answer rule,
    and the answer normalised once for that rule. A tuple: ~350K of them at paper scale."""

    extra: dict
    check: str | None
    expected: str | None
    verifiable: bool

    @classmethod
    def of(cls, row: Mapping, keep_context: bool) -> "Reference":
        answer = None if row.get("answer") is None else str(row["answer"])
        check = row.get("check")
        extra = {"answer": answer, "task": row.get("task"), "context": row.get("context") if keep_context else None}
        expected = None if answer is None else normalise_reference(answer, check)
        verifiable = answer is not None and rule(check) is not None
        return cls({k: v for k, v in extra.items() if v is not None}, check, expected, verifiable)

    def judge(self, response: str) -> tuple[bool | None, str | None]:
        """(whether `response` has the reference answer, None when nothing can be compared; its final answer)."""
        if not self.verifiable:
            return None, None
        got = extract_answer(response, self.check)
        return got is not None and got == self.expected, got


TRAIN_NAMES = ["id", "instruction", "responses", "answer", "check", "task", "context"]
CANDIDATE_NAMES = ["candidate_id", "instruction_id", "instruction", "response", "source", "sample_index"]


def _arrow_types() -> dict:
    import pyarrow as pa

    def items(*names):
        return pa.list_(pa.struct([(n, pa.string()) for n in names]))

    return {"responses": items("response", "source"), "context": items("role", "content"), "answer": pa.string()}


def _read(path: str, spec, names: list[str], fast: bool) -> Iterator[tuple[int | None, dict]]:
    """(line or None, row): the columns path when `fast` (`grape.columns`), else the Python reader with lines."""
    if fast:
        for row in columns.rows(path, spec, names, _arrow_types()):
            yield None, row
    else:
        for lineno, _, _, row in iter_jsonl_located(path, spec, loads=orjson.loads):
            yield lineno, row


class _Pool:
    """One pass over the inputs, writing the pool as it goes; `fast` picks the reader (see `run`)."""

    def __init__(self, params: Mapping, fast: bool):
        v = params["verify"]
        self.drop, self.unverifiable, self.fast = v["drop_incorrect"], v["unverifiable"], fast
        self.refs: dict[str, Reference] = {}
        self.counts: dict[str, Counter] = {}

    def originals(self, train_path: str, keep_ctx: bool, allow_empty: bool = False) -> Iterator[dict]:
        """The pool rows of the dataset's own responses, while filling `refs` (instruction id -> Reference)."""
        refs, counts = self.refs, self.counts
        for lineno, row in _read(train_path, TRAIN, TRAIN_NAMES, self.fast):
            if row["id"] in refs:
                raise DataError(train_path, lineno, "id", f"duplicate id {row['id']!r}")
            ref = refs[sys.intern(row["id"])] = Reference.of(row, keep_ctx)
            if self.drop and self.unverifiable == "error" and not ref.verifiable:
                why = "answer rule 'none' cannot compare answers" if "answer" in ref.extra else "missing"
                raise DataError(
                    train_path, lineno, "answer", f"{why} ({NEEDS_ANSWER}; or set verify.unverifiable: keep | drop)"
                )
            extra = {**ref.extra, **({"context": row["context"]} if row.get("context") else {})}
            per_source: Counter = Counter()
            for item in row["responses"]:
                check_row(train_path, lineno, item, TRAIN_RESPONSE)
                src = item["source"]
                c = counts.get(src) or counts.setdefault(src, Counter())
                c["generated"] += 1
                c["kept"] += 1
                ok, _ = ref.judge(item["response"])
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
        if not refs and not allow_empty:
            raise DataError(train_path, None, None, "no rows: expected the train instructions")

    def candidates(self, path: str, seen: set) -> Iterator[dict]:
        drop, n = self.drop, 0
        for lineno, cand in _read(path, CANDIDATE, CANDIDATE_NAMES, self.fast):
            n += 1
            cid = cand["candidate_id"]
            if cid in seen:
                raise DataError(path, lineno, "candidate_id", f"duplicate candidate_id {cid!r} (across files)")
            seen.add(cid)
            c = self.counts.get(cand["source"]) or self.counts.setdefault(cand["source"], Counter())
            c["generated"] += 1
            ref = self.refs.get(cand["instruction_id"])
            if ref is None:
                raise DataError(
                    path,
                    lineno,
                    "instruction_id",
                    f"candidate {cid} names unknown instruction {cand['instruction_id']!r}",
                )
            if not cand["response"].strip():
                c["dropped_empty"] += 1
                continue
            ok, got = ref.judge(cand["response"])
            c["correct"] += bool(ok)
            if drop and ok is None:
                if self.unverifiable == "drop":
                    c["dropped_unverifiable"] += 1
                    continue
                c["unverified_kept"] += 1
            elif drop and not ok:
                c["dropped_no_answer" if got is None else "dropped_wrong"] += 1
                continue
            c["kept"] += 1
            yield {**{k: cand[k] for k in POOL_FIELDS}, **ref.extra, "correct": ok}
        if not n:
            raise DataError(
                path, None, None, "no rows: expected the sample stage's candidates (one row per instruction x sample)"
            )


def _write(
    params: Mapping, train_path: str, candidate_paths: list[str], out: str, fast: bool, extend: str | None = None
) -> dict[str, Counter]:
    pool, seen = _Pool(params, fast), set()

    def rows():
        if extend:  # the pool as it is, then these instructions' own responses (`grape.data.BELOW_MIN`)
            with open(extend, "rb") as fh:
                yield from (orjson.loads(line) for line in fh if line.strip())
        yield from pool.originals(train_path, keep_ctx=bool(candidate_paths), allow_empty=bool(extend))
        for path in candidate_paths:
            yield from pool.candidates(path, seen)

    write_jsonl(out, rows(), encode=fast_dumps)
    return pool.counts


def run(
    params: Mapping, train_path: str, candidate_paths: list[str], out: str, counts_out: str, extend: str | None = None
) -> dict:
    """The pool (`extend` None), or `extend`'s pool followed by the dataset responses of the instructions in
    `train_path` (`data/below_min.jsonl`: the pool of every pair, `pool/all_available.jsonl`, counts of the added)."""
    try:
        counts, reader = _write(params, train_path, candidate_paths, out, True, extend), "columns"
    except (columns.Unreadable, DataError):  # read again row by row: the same pool, or the error with its line
        counts, reader = _write(params, train_path, candidate_paths, out, False, extend), "rows"
    table = [
        {"source": src, **{k: c[k] for k in COLUMNS}, "unverified_kept": c["unverified_kept"], "kept": c["kept"]}
        for src, c in counts.items()
    ]
    write_json(counts_out, table)
    return {"pool": sum(c["kept"] for c in counts.values()), "by_source": table, "reader": reader}
