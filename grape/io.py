"""JSONL reading with row validation, and writes that never leave half a file behind.

Every stage reads and writes JSON Lines. Bad input stops the stage with a message that names the
file, the line and the field, because a silently skipped row would change what GRAPE selects.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple


class DataError(ValueError):
    """Bad input: the message names the file, the 1-based line and the field."""

    def __init__(self, path: str | os.PathLike, line: int | None, field: str | None, problem: str):
        where = f"{path}" + (f":{line}" if line is not None else "")
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{problem}")
        self.path, self.line, self.field, self.problem = str(path), line, field, problem

    def __reduce__(self):  # raised in a worker process (grape.parallel): arrive whole in the parent
        return DataError, (self.path, self.line, self.field, self.problem)


class Field(NamedTuple):
    """One field of a row spec (`grape.contracts`): its allowed types, whether it must be present, whether a
    string must be non-blank, what it means (for docs and error messages), and for a number the closed range
    `bounds` = (low, high) it must lie in (`None`: any; `-math.inf`/`math.inf`: open on that side). A bounded
    number must also be finite: NaN and +-Infinity are never in range."""

    types: tuple[type, ...]
    required: bool = True
    non_empty: bool = False
    doc: str = ""
    bounds: tuple[float, float] | None = None


def describe_bounds(bounds: tuple[float, float]) -> str:
    """`bounds` in words: "<= 0", ">= 1", "in [0, 1]" (for error messages and docs/data_contract.md)."""
    low, high = (f"{b:g}" if isinstance(b, float) else str(b) for b in bounds)
    if bounds == (-math.inf, math.inf):
        return "any finite number"
    if bounds[0] == -math.inf:
        return f"<= {high}"
    if bounds[1] == math.inf:
        return f">= {low}"
    return f"in [{low}, {high}]"


# A row spec maps field name -> Field.
RowSpec = Mapping[str, Field]

_TYPE_NAMES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "list",
    dict: "object",
    type(None): "null",
}


_MISSING = object()
_BLANK_START = (b"", b"\n", b"\r", b" ", b"\t")
_INFINITE = (math.inf, -math.inf)


def out_of_bounds(value: Any, bounds: tuple[float, float]) -> bool:
    """Whether a number lies outside `bounds` or is not finite (NaN fails every comparison; +-inf is tested as such,
    since an open side is +-inf itself). Exact for ints of any size (no conversion to float)."""
    return not (bounds[0] <= value <= bounds[1]) or value in _INFINITE


class _NonFiniteLiteral(ValueError):
    """A NaN / Infinity / -Infinity literal: Python's json accepts them, JSON (and orjson) does not."""


def _reject_constant(name: str):
    raise _NonFiniteLiteral(name)


# Python's json.loads, except that NaN / Infinity / -Infinity are errors (as in orjson and in JSON itself): both
# readers then accept the same files. Same speed as json.loads (a C scanner; the hook runs only on those literals).
_STRICT = json.JSONDecoder(parse_constant=_reject_constant)


def _non_finite_field(text: str) -> str | None:
    """The top-level field of a row whose value is or holds a NaN/Infinity (read leniently, on the error path);
    None when there is none."""
    try:
        row = json.loads(text)
    except ValueError:
        return None

    def bad(v) -> bool:
        if isinstance(v, float):
            return not math.isfinite(v)
        if isinstance(v, dict):
            return any(bad(x) for x in v.values())
        if isinstance(v, list):
            return any(bad(x) for x in v)
        return False

    if isinstance(row, dict):
        return next((k for k, v in row.items() if bad(v)), None)
    return "" if bad(row) else None  # "": not an object (no field to name)


def check_row(path, lineno: int | None, row: Any, spec: RowSpec | None, require: Mapping[str, str] = ()) -> None:
    """Check one row against `spec`; `require` names optional fields this caller needs, with the reason.

    Hot at a million rows (verify, select, the score stage's index), so the common case is one dict lookup and one
    exact type test per field (measured faster than C-level `map` pipelines over the fields); anything unusual falls
    through to the full check and its message.
    """
    if type(row) is not dict:
        if not isinstance(row, dict):
            raise DataError(path, lineno, None, f"expected a JSON object, got {type(row).__name__}")
    if require:
        for field, why in dict(require).items():
            if row.get(field) is None:
                raise DataError(path, lineno, field, f"missing ({why})")
    if spec is None:
        return
    for field, (types, required, non_empty, _, bounds) in spec.items():
        value = row.get(field, _MISSING)
        if value is _MISSING:
            if required:
                raise DataError(path, lineno, field, "missing")
            continue
        if type(value) not in types:
            # bool is a subclass of int: do not accept True where a count is expected.
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
                raise DataError(path, lineno, field, f"expected {names}, got {type(value).__name__} {value!r:.60}")
        if non_empty and type(value) is str and (not value or value.isspace()):
            raise DataError(path, lineno, field, "empty")
        if bounds is not None and value is not None and out_of_bounds(value, bounds):
            raise DataError(path, lineno, field, f"expected a finite number {describe_bounds(bounds)}, got {value!r}")


def read_jsonl(
    path: str | os.PathLike,
    spec: RowSpec | None = None,
    unique: str | None = None,
    require: Mapping[str, str] = (),
    non_empty: str | None = None,
) -> list[dict]:
    """Read every row of a JSONL file, validating each against `spec`.

    `unique` names a field whose values must not repeat (an id). Blank lines are allowed and skipped.
    `require`: optional fields of the spec this caller needs ({field: why}). `non_empty`: when set, a file
    without rows is an error whose message says what was expected (e.g. "the candidate pool written by verify").
    """
    rows = list(iter_jsonl(path, spec, unique, require))
    if non_empty and not rows:
        raise DataError(path, None, None, f"no rows: expected {non_empty}")
    return rows


def iter_jsonl(
    path: str | os.PathLike,
    spec: RowSpec | None = None,
    unique: str | None = None,
    require: Mapping[str, str] = (),
    loads=json.loads,
) -> Iterator[dict]:
    for _, _, _, row in iter_jsonl_located(path, spec, unique, require, loads=loads):
        yield row


def iter_jsonl_located(
    path: str | os.PathLike,
    spec: RowSpec | None = None,
    unique: str | None = None,
    require: Mapping[str, str] = (),
    loads=json.loads,
    keep=None,
) -> Iterator[tuple[int, int, bytes, dict]]:
    """(line number, byte offset, raw line, row) for every checked row: the one JSONL loop of the package.

    `loads` parses a line (`orjson.loads` where a million rows make `json.loads` the bottleneck; both raise
    json.JSONDecodeError). `json.loads` is read as its strict form: like orjson, neither takes the NaN/Infinity
    literals (nor does orjson take a number beyond a double, 1e400), and such a line is an error naming its field.
    `keep(row)`: rows it rejects are checked but neither yielded nor held to `unique` (one shard of a pool).
    """
    seen: dict[Any, int] = {}
    offset = 0
    takes_bytes = loads is not json.loads  # orjson parses (and checks the UTF-8 of) bytes: no decoded copy
    if not takes_bytes:
        loads = _STRICT.decode
    with open(path, "rb", buffering=1 << 20) as fh:
        for lineno, raw in enumerate(fh, start=1):
            start, offset = offset, offset + len(raw)
            if raw[:1] in _BLANK_START and not raw.strip():
                continue
            try:
                row = loads(raw if takes_bytes else raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise DataError(path, lineno, None, f"not valid UTF-8 (byte {err.start})") from None
            except ValueError as err:  # json.JSONDecodeError, orjson's, or a NaN/Infinity literal
                raise _parse_error(path, lineno, raw, err) from None
            check_row(path, lineno, row, spec, require)
            if keep is not None and not keep(row):
                continue
            if unique is not None:
                key = row.get(unique)
                if key in seen:
                    raise DataError(path, lineno, unique, f"duplicate id {key!r} (first on line {seen[key]})")
                seen[key] = lineno
            yield lineno, start, raw, row


def _parse_error(path, lineno: int, raw: bytes, err: ValueError) -> DataError:
    """The error for a line the reader did not take: bad UTF-8, a non-finite number (named by its field), or
    malformed JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return DataError(path, lineno, None, f"not valid UTF-8 (byte {bad.start})")
    field = _non_finite_field(text)
    if field is not None:
        return DataError(path, lineno, field or None, "NaN, Infinity or a number beyond a double: not valid JSON")
    if isinstance(err, json.JSONDecodeError):
        return DataError(path, lineno, None, f"malformed JSON: {err.msg} at column {err.colno}")
    return DataError(path, lineno, None, f"malformed JSON: {err}")


def dumps(row: Mapping) -> str:
    """One JSONL line. NaN/Infinity are refused (`allow_nan=False`): JSON has no such numbers, and no stage writes an
    impossible score or count in their place (`write_jsonl` names the row and field)."""
    return json.dumps(row, ensure_ascii=False, sort_keys=False, allow_nan=False)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it is renamed onto `path`, on failure removed.

    A stage killed mid-way therefore leaves either the old output or nothing, never a truncated file
    that a rerun would trust.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp if directory else tmp / path.name
    try:
        yield target
        if target.is_dir():
            os.chmod(target, 0o755)  # mkdtemp makes 0700; outputs are meant to be shared
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fast_dumps(row: Mapping) -> bytes:
    """Compact JSON through orjson: the writer of the stages that stream a million rows (verify, select)."""
    import orjson

    return orjson.dumps(row)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping], encode=None) -> int:
    """Write rows atomically (rows may be a generator: nothing is held); returns how many were written.

    `encode(row) -> bytes`: `fast_dumps` where a million rows make `json.dumps` the bottleneck."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=1 << 20) as fh:
        for row in rows:
            try:
                line = encode(row) if encode else dumps(row).encode("utf-8")
            except ValueError:
                field = _non_finite_field(json.dumps(row, default=str))
                if field is None:
                    raise
                # a NaN/Infinity (`dumps`): the file is not written, the row and field are named
                raise DataError(path, n + 1, field or None, "NaN/Infinity: not a finite number; not written") from None
            fh.write(line + b"\n")
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, sort_keys=True, default=str)
        fh.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise DataError(path, err.lineno, None, f"malformed JSON: {err.msg}") from None
