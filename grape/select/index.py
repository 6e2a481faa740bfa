"""The pool and the scores as the few columns selection needs, read in C++ (`grape.columns`, pyarrow's JSON reader).

Selection needs, per candidate, its id, instruction, source, byte offset and score: not the texts. Parsing a million
1.5 KB rows in Python costs ~8 us each before any row check; pyarrow's reader parses the file in C++ threads and
turns only the listed columns into Python objects, with every field of `grape.contracts` it can type checked on the
way (the texts too: a blank response stops the job here, not in the training set; the scores' ranges: a log-prob
above 0, NaN, Infinity, a token count below 1). Anything it cannot take sends the file to the Python reader, which
names the file, line and field, or, when it finds nothing wrong after all, does the whole job itself. The rows that
are written are checked in full again when they are read back (`checked_row`).
"""

from __future__ import annotations

from array import array
from typing import Container

import orjson

from grape import columns
from grape.contracts import POOL, SCORED
from grape.io import DataError, check_row, iter_jsonl_located

_BLANK_START = (b"\n", b"\r", b" ", b"\t")


def _context_type():
    import pyarrow as pa

    return {"context": pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))}


def _columns(path: str, spec, names: list[str]) -> dict[str, list] | None:
    """The columns `names`, every field of `spec` checked; None when pyarrow cannot read the file cleanly (the
    caller then uses the Python reader)."""
    out: dict[str, list] = {n: [] for n in names}
    try:
        for cols in columns.batches(path, spec, names, _context_type(), check_all=True):
            for n in names:
                out[n] += cols[n]
    except columns.Unreadable:
        return None
    return out


def _offsets(path: str) -> array:
    """Byte offset of every non-blank line (the rows pyarrow numbered), in one pass over the bytes."""
    out, pos = array("q"), 0
    with open(path, "rb", buffering=1 << 20) as fh:
        for raw in fh:
            if not (raw[:1] in _BLANK_START and not raw.strip()):
                out.append(pos)
            pos += len(raw)
    return out


def _raise_precisely(path: str, spec) -> None:
    """Let the Python reader find the problem and name its line (a duplicate id seen on the column path)."""
    for _ in iter_jsonl_located(path, spec, unique="candidate_id", loads=orjson.loads):
        pass
    raise DataError(path, None, "candidate_id", "duplicate id")


def line_at(path: str, offset: int) -> int:
    """The 1-based line number of the byte `offset` (for an error message: reads the file up to there)."""
    lines, left = 1, offset
    with open(path, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            left -= len(chunk)
    return lines


def checked_row(path: str, raw: bytes, at: int) -> dict:
    """A pool row read back by its byte offset `at`, checked in full against `POOL` again (the file may have changed
    since it was indexed); its line number is counted only for an error."""
    try:
        row = orjson.loads(raw)
        check_row(path, None, row, POOL)
        for i, m in enumerate(row.get("context") or ()):  # copied into the example's `messages`
            if not (isinstance(m, dict) and type(m.get("role")) is str and type(m.get("content")) is str):
                raise DataError(path, None, "context", f"item {i}: expected {{role, content}} strings, got {m!r:.60}")
    except ValueError as err:  # a DataError, or orjson's JSONDecodeError
        line = line_at(path, at)
        if isinstance(err, DataError):
            raise DataError(path, line, err.field, err.problem) from None
        raise DataError(path, line, None, f"malformed JSON: {err}") from None
    return row


def pool_index(path: str, ids: set | None = None) -> tuple[dict[str, list[dict]], int]:
    """instruction id -> its candidates {candidate_id, source, at (byte offset)}, in file order; and how many there
    are. `ids`, when given, receives every candidate id (to check what refers to the pool)."""
    cols = _columns(path, POOL, ["instruction_id", "candidate_id", "source"])
    offsets = _offsets(path) if cols is not None else None
    if cols is None or len(offsets) != len(cols["candidate_id"]):
        rows = [
            (r["instruction_id"], r["candidate_id"], r["source"], at)
            for _, at, _, r in iter_jsonl_located(path, POOL, unique="candidate_id", loads=orjson.loads)
        ]
    else:
        rows = zip(cols["instruction_id"], cols["candidate_id"], cols["source"], offsets)
    groups: dict[str, list[dict]] = {}
    seen: set[str] = set() if ids is None else ids
    for iid, cid, source, at in rows:
        if cid in seen:
            _raise_precisely(path, POOL)
        seen.add(cid)
        cand = {"candidate_id": cid, "source": source, "at": at}
        have = groups.get(iid)
        if have is None:
            groups[iid] = [cand]
        else:
            have.append(cand)
    if not seen:
        raise DataError(path, None, None, "no rows: expected the candidate pool written by verify")
    return groups, len(seen)


def _unknown(path: str, cid: str, pool_path: str | None) -> DataError:
    """The error for a score row whose candidate is not in the pool, with its line (found by the Python reader)."""
    line = next(
        (n for n, _, _, r in iter_jsonl_located(path, SCORED, loads=orjson.loads) if r["candidate_id"] == cid), None
    )
    where = f" {pool_path}" if pool_path else ""
    return DataError(
        path, line, "candidate_id", f"{cid!r} is not in the pool{where}: these scores belong to another pool"
    )


# Every scoring backend writes mean_logprob = sum_logprob / n_tokens in doubles (grape.score.results); 1e-6 relative
# still takes numbers another tool rounded to float32 (~6e-8 each), and catches a mean edited, shifted to another
# row, or computed over other tokens (those differ by far more).
MEAN_RTOL = 1e-6


def _check_means(path: str, spec, cols: dict[str, list]) -> None:
    """GRAPE ranks by mean_logprob: a row whose mean is not its own sum_logprob / n_tokens is refused, naming its line."""
    import numpy as np

    mean, total = np.asarray(cols["mean_logprob"], float), np.asarray(cols["sum_logprob"], float)
    n = np.asarray(cols["n_tokens"], float)
    bad = np.flatnonzero(np.abs(mean - total / n) > MEAN_RTOL * np.maximum(1.0, np.abs(mean)))
    if len(bad):
        cid = cols["candidate_id"][bad[0]]
        line = next((ln for ln, _, _, r in iter_jsonl_located(path, spec, loads=orjson.loads)
                     if r["candidate_id"] == cid), None)  # fmt: skip
        m, t, k = float(mean[bad[0]]), float(total[bad[0]]), int(n[bad[0]])
        problem = f"{m!r} is not sum_logprob / n_tokens = {t!r} / {k} = {t / k!r} ({len(bad)} row(s) like it)"
        raise DataError(path, line, "mean_logprob", problem + ": the scores were edited, or mixed up between rows")


def scores(
    path: str, known: Container[str] | None = None, pool_path: str | None = None, spec=SCORED, field="mean_logprob"
) -> dict[str, float]:
    """candidate id -> its `field` (mean log-prob, GRAPE's criterion; or a reward model's `reward` with `REWARD`),
    every row checked against `spec` (ranges included). `known`: the pool's candidate ids; a score of any other
    candidate is an error (`pool_path` names the pool)."""
    mean = spec is SCORED and field == "mean_logprob"  # checked against sum_logprob / n_tokens
    names = ["candidate_id", field, *(["sum_logprob", "n_tokens"] if mean else [])]
    cols = _columns(path, spec, names)
    if cols is None:
        rows = [r for *_, r in iter_jsonl_located(path, spec, unique="candidate_id", loads=orjson.loads)]
        cols = {n: [r[n] for r in rows] for n in names}
    if mean:
        _check_means(path, spec, cols)
    pairs = zip(cols["candidate_id"], cols[field])
    out: dict[str, float] = {}
    for cid, value in pairs:
        if cid in out:
            _raise_precisely(path, spec)
        if known is not None and cid not in known:
            raise _unknown(path, cid, pool_path)
        out[cid] = float(value)
    return out
