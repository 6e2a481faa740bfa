"""JSONL reading with row validation, and writes that never leave half a file behind.

Every stage reads and writes JSON Lines. Bad input stops the stage with a message that names the
file, the line and the field, because a silently skipped row would change what GRAPE selects.
"""

from __future__ import annotations

import contextlib
import json
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
    string must be non-blank, and what it means (for docs and error messages)."""

    types: tuple[type, ...]
    required: bool = True
    non_empty: bool = False
    doc: str = ""


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
    for field, (types, required, non_empty, _) in spec.items():
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
    json.JSONDecodeError). `keep(row)`: rows it rejects are checked but neither yielded nor held to `unique`
    (one shard of a pool).
    """
    seen: dict[Any, int] = {}
    offset = 0
    takes_bytes = loads is not json.loads  # orjson parses (and checks the UTF-8 of) bytes: no decoded copy
    with open(path, "rb", buffering=1 << 20) as fh:
        for lineno, raw in enumerate(fh, start=1):
            start, offset = offset, offset + len(raw)
            if raw[:1] in _BLANK_START and not raw.strip():
                continue
            try:
                row = loads(raw if takes_bytes else raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise DataError(path, lineno, None, f"not valid UTF-8 (byte {err.start})") from None
            except json.JSONDecodeError as err:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as bad:
                    raise DataError(path, lineno, None, f"not valid UTF-8 (byte {bad.start})") from None
                raise DataError(path, lineno, None, f"malformed JSON: {err.msg} at column {err.colno}") from None
            check_row(path, lineno, row, spec, require)
            if keep is not None and not keep(row):
                continue
            if unique is not None:
                key = row.get(unique)
                if key in seen:
                    raise DataError(path, lineno, unique, f"duplicate id {key!r} (first on line {seen[key]})")
                seen[key] = lineno
            yield lineno, start, raw, row


def dumps(row: Mapping) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=False)


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
            fh.write((encode(row) if encode else dumps(row).encode("utf-8")) + b"\n")
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
