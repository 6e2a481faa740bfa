"""JSONL tables read in C++ (pyarrow's JSON reader) when a million rows make the Python reader the bottleneck.

Parsing and checking a 1.5 KB row in Python costs ~8 us on our 2-core machines; pyarrow parses 4 MiB blocks in C++
threads, keeps only the columns asked for (texts not asked for are skipped, not held) and enforces the types of
`grape.contracts` on them. It is the fast path only: anything it cannot take cleanly (a malformed line, a wrong or
mixed type, a missing required field, a blank string where one is not allowed) raises `Unreadable`, and the caller
reads the file again with `grape.io`'s reader, which names the file, line and field, or, when it finds nothing
wrong after all, does the job itself. Blank lines are skipped by both readers, so row numbers agree.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from grape.io import Field

BLOCK = 4 << 20  # bytes per parsed block: memory stays flat whatever the file size


class Unreadable(Exception):
    """pyarrow could not read this file cleanly; the Python reader will, or will say why."""


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
    return None


def batches(
    path: str, spec: Mapping[str, Field], names: list[str], types: Mapping[str, object] = ()
) -> Iterator[dict[str, list]]:
    """Columns `names` of each block, as Python lists. `types`: pyarrow types for fields `_arrow_type` cannot
    derive (lists of structs). Every required non-text field of `spec` is read too, to have its type checked."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    types = dict(types)
    wanted = [f for f in spec if f in names or (spec[f].required and str not in spec[f].types)]
    fields = [(f, types.get(f) or _arrow_type(spec[f])) for f in wanted]
    schema = pa.schema([(f, t) for f, t in fields if t is not None])
    missing = [n for n in names if n not in schema.names]
    if missing:
        raise ValueError(f"no pyarrow type for {missing}: pass them in `types`")
    try:
        reader = pj.open_json(
            path,
            read_options=pj.ReadOptions(block_size=BLOCK),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        for batch in reader:
            for name in schema.names:
                col, f = batch.column(name), spec[name]
                if f.required and type(None) not in f.types and col.null_count:
                    raise Unreadable(f"{name}: missing")
                if f.non_empty and pa.types.is_string(col.type) and col.null_count < len(col):
                    if pc.any(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)).as_py():
                        raise Unreadable(f"{name}: blank")
            yield {n: batch.column(n).to_pylist() for n in names}
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        raise Unreadable(str(err)) from None


def rows(path: str, spec: Mapping[str, Field], names: list[str], types: Mapping[str, object] = ()) -> Iterator[dict]:
    """Row dicts of `names`; an optional field a row lacks is absent from its dict (as the Python reader has it)."""
    for cols in batches(path, spec, names, types):
        keys = list(cols)
        for values in zip(*cols.values()):
            yield {k: v for k, v in zip(keys, values) if v is not None}
