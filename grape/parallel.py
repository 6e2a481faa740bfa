"""Forked worker processes for the model-free stages, on the cores a job was given.

Importing and selecting a million-pair pool is plain Python per row, so the data stage (`grape.data.grouping`:
byte ranges of the input, then runs of partitions) and `select` (slices of the instructions, then of the picked
examples) cut their work into one contiguous piece per core and run each in a forked process (`starmap`: state set
up before the fork, such as the index and scores, is shared rather than copied or pickled). Results come back in
order and part files are joined in that order (`concat`), so the output is the same file one process writes,
whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence


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
    """Join the part files into `out`, in order, removing them. The first part becomes `out` by a rename and only the
    others are copied (in the kernel where it can): at a million examples the bytes written are the stage's main
    cost (~2.7 s of kernel time per GB on our machines), so a full copy of every part would nearly double it."""
    if not parts:
        Path(out).write_bytes(b"")
        return
    os.replace(parts[0], out)
    with open(out, "r+b") as dst:  # not "ab": copy_file_range refuses an O_APPEND target
        dst.seek(0, os.SEEK_END)
        for part in parts[1:]:
            with open(part, "rb") as src:
                left = os.fstat(src.fileno()).st_size
                try:
                    while left > 0:
                        n = os.copy_file_range(src.fileno(), dst.fileno(), left)
                        if n <= 0:
                            break
                        left -= n
                except (AttributeError, OSError):
                    pass
                if left > 0:  # no copy_file_range here (or it stopped): the rest through user space
                    src.seek(os.fstat(src.fileno()).st_size - left)
                    dst.seek(0, os.SEEK_END)
                    shutil.copyfileobj(src, dst, 16 << 20)
            Path(part).unlink()
