"""The pool and the scores as the few columns selection needs, read in C++ (pyarrow's JSON reader).

Selection needs, per candidate, its id, instruction, source, byte offset and score: not the texts. Parsing a million
1.5 KB rows in Python costs ~8 us each before any row check; pyarrow's reader parses the file in C++ threads and
keeps only the listed columns (the texts are skipped, not held), with the types of `grape.contracts` enforced.
Anything it cannot take (a malformed line, a wrong type, a missing or blank field, a blank line it reads differently)
sends the file to the Python reader, which names the file, line and field, or, when it finds nothing wrong after
all, does the whole job itself. The rows that are written are checked in full when they are read back.
"""

from __future__ import annotations

from array import array
from typing import Mapping

import orjson

from grape.contracts import POOL, SCORED
from grape.io import DataError, Field, iter_jsonl_located

_BLANK_START = (b"\n", b"\r", b" ", b"\t")


def _arrow_type(f: Field):
    import pyarrow as pa

    kinds = set(f.types) - {type(None)}
    if kinds == {str}:
        return pa.string()
    if kinds == {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    if kinds == {bool}:
        return pa.bool_()
    return None  # nothing pyarrow can check for us (mixed types): leave the field to the row check


def _columns(path: str, spec: Mapping[str, Field], names: list[str]) -> dict[str, list] | None:
    """The columns `names` (plus every required field of `spec` pyarrow can type, to check them); None when
    pyarrow cannot read the file cleanly (the caller then uses the Python reader)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    # the named columns, plus the required fields that are not texts (their types are checked here for free)
    fields = [f for f in spec if f in names or (spec[f].required and str not in spec[f].types)]
    typed = [(f, _arrow_type(spec[f])) for f in fields]
    schema = pa.schema([(f, t) for f, t in typed if t is not None])
    out: dict[str, list] = {n: [] for n in names}
    try:
        reader = pj.open_json(  # streamed in 4 MiB blocks: memory stays flat whatever the file size
            path,
            read_options=pj.ReadOptions(block_size=4 << 20),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        for batch in reader:
            for name in schema.names:
                col, f = batch.column(name), spec[name]
                if f.required and type(None) not in f.types and col.null_count:
                    return None
                if f.non_empty and pa.types.is_string(col.type) and col.null_count < len(col):
                    if pc.any(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)).as_py():
                        return None
            for n in names:
                out[n] += batch.column(n).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
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


def pool_index(path: str) -> tuple[dict[str, list[dict]], int]:
    """instruction id -> its candidates {candidate_id, source, at (byte offset)}, in file order."""
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
    seen: set[str] = set()
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


def scores(path: str) -> dict[str, float]:
    """candidate id -> mean log-prob (GRAPE's criterion)."""
    cols = _columns(path, SCORED, ["candidate_id", "mean_logprob"])
    if cols is None:
        pairs = [
            (r["candidate_id"], float(r["mean_logprob"]))
            for r in (row for *_, row in iter_jsonl_located(path, SCORED, unique="candidate_id", loads=orjson.loads))
        ]
    else:
        pairs = zip(cols["candidate_id"], cols["mean_logprob"])
    out: dict[str, float] = {}
    for cid, value in pairs:
        if cid in out:
            _raise_precisely(path, SCORED)
        out[cid] = value
    return out
