"""JSONL tables read in C++ (pyarrow's JSON reader) when a million rows make the Python reader the bottleneck.

Parsing and checking a 1.5 KB row in Python costs ~8 us on our 2-core machines; pyarrow parses 4 MiB blocks in C++
threads, keeps only the columns asked for (texts not asked for are skipped, not held) and enforces the types and
ranges of `grape.contracts` on them. It is the fast path only: anything it cannot take cleanly (a malformed line, a
wrong or mixed type, a missing required field, a blank string where one is not allowed, a number outside its range:
pyarrow reads NaN and Infinity, which JSON and the Python reader do not) raises `Unreadable`, and the caller
reads the file again with `grape.io`'s reader, which names the file, line and field, or, when it finds nothing
wrong after all, does the job itself. Blank lines are skipped by both readers, so row numbers agree.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from grape.io import Field, describe_bounds

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


def _bad_number(col, f: Field, pa, pc) -> bool:
    """Whether a numeric column holds a value outside `f.bounds`, NaN or +-Infinity (nulls are the type check's)."""
    if f.bounds is None or not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        return False
    low, high = f.bounds
    inside = pc.and_(
        pc.greater_equal(col, pa.scalar(low, pa.float64())), pc.less_equal(col, pa.scalar(high, pa.float64()))
    )
    if pa.types.is_floating(col.type):
        inside = pc.and_(inside, pc.is_finite(col))
    return pc.any(pc.invert(inside)).as_py() is True


def batches(
    path: str,
    spec: Mapping[str, Field],
    names: list[str],
    types: Mapping[str, object] = (),
    check_all: bool = False,
) -> Iterator[dict[str, list]]:
    """Columns `names` of each block, as Python lists. `types`: pyarrow types for fields `_arrow_type` cannot
    derive (lists of structs). Every required non-text field of `spec` is read too, to have its type and range
    checked; with `check_all`, every field of `spec` pyarrow can type (the texts too: parsed and checked in C++,
    never turned into Python strings)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    types = dict(types)
    wanted = [f for f in spec if check_all or f in names or (spec[f].required and str not in spec[f].types)]
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
                if _bad_number(col, f, pa, pc):
                    raise Unreadable(f"{name}: not a finite number {describe_bounds(f.bounds)}")
            yield {n: batch.column(n).to_pylist() for n in names}
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        raise Unreadable(str(err)) from None


def rows(
    path: str, spec: Mapping[str, Field], names: list[str], types: Mapping[str, object] = (), check_all: bool = False
) -> Iterator[dict]:
    """Row dicts of `names`; an optional field a row lacks is absent from its dict (as the Python reader has it)."""
    for cols in batches(path, spec, names, types, check_all):
        keys = list(cols)
        for values in zip(*cols.values()):
            yield {k: v for k, v in zip(keys, values) if v is not None}
