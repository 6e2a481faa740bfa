"""The model-free stages on every core a job has: one JSONL file cut into byte ranges, one process per range.

Parsing, checking and re-writing a million 1.5 KB rows costs ~20 us a row in one Python process on our 2-core
machines (orjson loads + dumps and the row check alone), so verify and select would take longer than the forward
passes they feed. `ranges` cuts a file at line starts into one range per worker, `starmap` runs `fn` on each range in a
forked process (read-only state set up before the fork is shared, not copied or pickled), and returns the results
in file order; `concat` joins per-range part files into one output in that order. The result is the same file a
single process writes: ranges are contiguous and kept in order, so row order never depends on the worker count.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence


class Range(NamedTuple):
    """Bytes [start, end) of a file. Line numbers inside a range count from 1 (`first_line`); a worker that stops on
    bad input turns its line into the file's line (`absolute_line`) before the error leaves it."""

    path: str
    start: int
    end: int
    first_line: int = 1


MIN_RANGE_BYTES = 8 << 20  # below this a fork costs more than it saves


def ranges(path: str | os.PathLike, n: int) -> list[Range]:
    """`n` ranges (fewer for a small file) that start at line starts."""
    size = os.path.getsize(path)
    n = max(1, min(n, size // MIN_RANGE_BYTES or 1))
    cuts = [0]
    with open(path, "rb") as fh:
        for i in range(1, n):
            fh.seek(max(size * i // n, cuts[-1]))
            fh.readline()  # to the next line start
            cuts.append(min(fh.tell(), size))
    cuts.append(size)
    out = [Range(str(path), a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
    return out or [Range(str(path), 0, 0)]


def absolute_line(part: Range, line: int | None) -> int | None:
    """The file's line number of line `line` of `part` (counts the newlines before the range: the error path only)."""
    if line is None or part.start == 0:
        return line
    before, left = 0, part.start
    with open(part.path, "rb") as fh:
        while left > 0:
            block = fh.read(min(left, 16 << 20))
            before += block.count(b"\n")
            left -= len(block)
    return before + line


def guarded(fn: Callable[..., Any], part: Range, *args: Any) -> Any:
    """fn(part, *args), with a DataError's line made the file's line (use as `starmap(guarded, [(fn, part, ...)])`)."""
    from grape.io import DataError

    try:
        return fn(part, *args)
    except DataError as err:
        if err.path != part.path or part.start == 0:
            raise
        raise DataError(err.path, absolute_line(part, err.line), err.field, err.problem) from None


def workers(requested: int | None) -> int:
    """Processes to use: what the job was given (`--threads`), never more than the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested or 1, cores))


def starmap(fn: Callable[..., Any], calls: Sequence[tuple]) -> list[Any]:
    """[fn(*args) for args in calls], in order; one forked process per call when there are several. State the
    calls read (an index, the scores) is set up before this and reaches the workers through the fork."""
    if len(calls) <= 1:
        return [fn(*args) for args in calls]
    with multiprocessing.get_context("fork").Pool(len(calls)) as pool:
        return pool.starmap(fn, calls)


def concat(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> None:
    """Append the part files to `out` in order (kernel copy), removing each part."""
    with open(out, "ab") as dst:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 16 << 20)
            Path(part).unlink()
