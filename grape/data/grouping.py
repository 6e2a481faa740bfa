"""Group a pool's rows by instruction without holding the pool in memory, on every core the job has.

Responses of one instruction are scattered over a dataset (UltraInteract rows share a `parent_id`) or over several
datasets (Tulu-3: the SFT mixture and four preference mixes). `Grouper` hash-partitions the rows to temporary files
by their key, then groups one partition at a time, so peak memory is about one partition (1/`partitions` of the
pool), not the pool.

An importer describes its pool as a `Grouped`: `read(dataset, rows, add, tally)` files rows under `add(key, record)` (phase 1),
`build(digest, records, tally)` turns one group into train rows (phase 2). Iterating a `Grouped` runs both in this
process; `Grouped.write` (what the data stage calls) runs each phase in one forked process per core: phase 1 over
contiguous parts of the input (`source.Dataset.parts`: byte ranges of a JSON Lines file, runs of data files), each
part into its own *segment* of partition files; phase 2 over contiguous runs of partitions. Partition i is read
segment by segment in input order, so a group's records keep their input order and the output (rows, their order,
counts, the dropped list) is the same file for any number of processes: partition by partition, and within one in
order of first appearance.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import orjson
from tqdm import tqdm

# The mark an importer puts on an instruction with fewer than `data.min_responses` distinct responses: it stays out of
# `data/train.jsonl` (the pool) and goes to `data/below_min.jsonl`, which only the arms trained on every pair read
# (Table 2's Tulu3-SFT and All Available Data: single-response instructions included).
BELOW_MIN = "below_min"


def key_hash(key: str | bytes) -> str:
    """A stable 24-hex-digit (96-bit) digest of a group key: groups are told apart by it alone (a collision among
    a million keys has odds ~1e-17) and the instruction ids of grouped pools are built from it."""
    return hashlib.blake2b(key if isinstance(key, bytes) else key.encode("utf-8"), digest_size=12).hexdigest()


class Grouper:
    """Partition files under one temporary directory; segment `s`, partition `i` is `{s:04d}-{i:03d}.jsonl`."""

    def __init__(self, workdir: str | Path | None = None, partitions: int = 64):
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=".grape-group-", dir=workdir))
        self.n = partitions
        self.segments = 0
        self.files: list | None = None

    def _path(self, segment: int, i: int) -> Path:
        return self.dir / f"{segment:04d}-{i:03d}.jsonl"

    def open_segment(self, segment: int | None = None) -> None:
        """Write the next `add`s to a new segment (`segment`: one reserved with `reserve`, in a worker)."""
        self.close_segment()
        if segment is None:
            segment, self.segments = self.segments, self.segments + 1
        self.files = [open(self._path(segment, i), "wb", buffering=1 << 16) for i in range(self.n)]

    def close_segment(self) -> None:
        for fh in self.files or ():
            fh.close()
        self.files = None

    def reserve(self, k: int) -> list[int]:
        """k new segment numbers, in order, for k workers that each write one."""
        self.close_segment()
        out = list(range(self.segments, self.segments + k))
        self.segments += k
        return out

    def add(self, key: str | bytes, record: dict) -> None:
        """File `record` under `key`; only the key's digest is written (the key itself can be a long text)."""
        if self.files is None:
            self.open_segment()
        h = key_hash(key)
        self.files[int(h[:8], 16) % self.n].write(orjson.dumps([h, record]) + b"\n")

    def groups(self, lo: int = 0, hi: int | None = None) -> Iterator[tuple[str, list[dict]]]:
        """(key digest, records) for every group of partitions lo..hi-1 (all by default)."""
        self.close_segment()
        for i in range(lo, self.n if hi is None else hi):
            part: dict[str, list[dict]] = {}
            for segment in range(self.segments):
                path = self._path(segment, i)
                if not path.exists():
                    continue
                with open(path, "rb") as fh:
                    for line in fh:
                        h, record = orjson.loads(line)
                        part.setdefault(h, []).append(record)
            yield from part.items()
            del part

    def close(self) -> None:
        self.close_segment()
        shutil.rmtree(self.dir, ignore_errors=True)


Read = Callable[..., None]  # read(dataset, (where, row) iterable, add(key, record), tally)
Build = Callable[[str, list[dict], object], Iterable[dict]]  # build(key digest, records, tally) -> train rows


class Grouped:
    """An importer's pool, grouped: each of `datasets` (`source.Dataset`, read in order, split by `parts`) goes
    through `read(dataset, rows, add, tally)`; every group then through `build`. See the module docstring."""

    def __init__(
        self, datasets, read: Read, build: Build, tally, workdir, partitions: int = 64, limit: int | None = None
    ):
        self.datasets, self.read, self.build, self.tally = list(datasets), read, build, tally
        self.workdir, self.partitions, self.limit = workdir, partitions, limit
        self.on_dataset = None  # on_dataset(ds, tally), in this process, once a dataset has been read
        self.empty_hint = ""  # added to the error for a dataset without rows (e.g. how a mix may lack one)

    def __iter__(self) -> Iterator[dict]:
        grouper = self.fill(1)
        try:
            for digest, recs in grouper.groups():
                yield from self.build(digest, recs, self.tally)
        finally:
            grouper.close()

    def fill(self, workers: int) -> Grouper:
        """Phase 1: every dataset's rows into a new Grouper, in `workers` processes where a dataset can be split."""
        from grape.parallel import starmap

        grouper = Grouper(self.workdir, self.partitions)
        try:
            for ds in self.datasets:
                parts = ds.parts(workers) if self.limit is None else [ds]
                if len(parts) == 1:
                    rows = ds.rows() if self.limit is None else itertools.islice(ds.rows(), self.limit)
                    counted = _Counted(rows)
                    self.read(ds, _progress(counted, f"read {ds.name}", self.limit), grouper.add, self.tally)
                    n = counted.n
                else:
                    _JOB[:] = [self, grouper, parts]
                    try:
                        results = starmap(_fill_part, [(i, s) for i, s in enumerate(grouper.reserve(len(parts)))])
                    finally:
                        _JOB.clear()
                    for r, _ in results:
                        self.tally.merge(r)
                    n = sum(k for _, k in results)
                if not n and not ds.allow_empty:
                    self._empty(ds)
                if self.on_dataset is not None:
                    self.on_dataset(ds, self.tally)
        except BaseException:
            grouper.close()  # a bad row stops the stage: leave no partition files behind
            raise
        grouper.close_segment()
        return grouper

    def _empty(self, ds) -> None:
        from grape.io import DataError

        local = os.path.exists(ds.path)
        what = "the file is empty or holds only blank lines" if os.path.isfile(ds.path) else "the dataset is empty"
        of = f" (dataset {ds.name!r} of the mix)" if len(self.datasets) > 1 else ""
        raise DataError(ds.path if local else ds.label(), None, None, f"no rows: {what}{of}{self.empty_hint}")


class _Counted:
    """An iterable that counts what it yields (`n`), so a dataset without rows is caught whatever `read` does."""

    def __init__(self, rows):
        self.rows, self.n = rows, 0

    def __iter__(self):
        for item in self.rows:
            self.n += 1
            yield item


_JOB: list = []  # (Grouped, Grouper, parts) while phase-1 workers fork; (Grouped, Grouper, write_part) for phase 2


def _progress(rows, desc: str, total=None):
    return tqdm(rows, desc=desc, unit=" rows", mininterval=2, total=total)


def _fill_part(i: int, segment: int):
    grouped, grouper, parts = _JOB
    part, tally = parts[i], grouped.tally.fresh()
    grouper.open_segment(segment)
    counted = _Counted(part.rows())
    grouped.read(part, _progress(counted, f"read {part.name} [{i + 1}/{len(parts)}]"), grouper.add, tally)
    grouper.close_segment()
    return tally, counted.n


def build_parts(grouped: Grouped, grouper: Grouper, workers: int, write_part) -> list:
    """Phase 2: `write_part(rows, tally, i)` on the rows of each contiguous run of partitions, one forked process per
    run; returns the runs' results in order (each run's tally is merged into `grouped.tally`)."""
    from grape.parallel import starmap

    k = max(1, min(workers, grouper.n))
    cuts = [grouper.n * j // k for j in range(k + 1)]
    _JOB[:] = [grouped, grouper, write_part]
    try:
        results = starmap(_build_part, [(j, a, b) for j, (a, b) in enumerate(zip(cuts, cuts[1:]))])
    finally:
        _JOB.clear()
    for _, tally in results:
        grouped.tally.merge(tally)
    return [r for r, _ in results]


def _build_part(j: int, lo: int, hi: int):
    grouped, grouper, write_part = _JOB
    tally = grouped.tally.fresh()
    rows = (row for digest, recs in grouper.groups(lo, hi) for row in grouped.build(digest, recs, tally))
    return write_part(rows, tally, j), tally


def distinct(responses: list[dict], counts) -> list[dict]:
    """The responses ({response, source}) with repeats removed: the first of each whitespace-normalised text is kept
    (input order, so list the preferred source first) and each repeat counted as `duplicate_responses`.

    Only responses whose `signature` matches are normalised and compared, so a million long responses cost one
    C-speed pass each instead of a split into words."""
    from grape.data.conversations import normalise, signature

    if len(responses) == 1:
        return responses
    by_sig: dict[bytes, list[str]] = {}
    out = []
    for r in responses:
        sig = signature(r["response"])
        same = by_sig.get(sig)
        if same is not None:
            norm = normalise(r["response"])
            if any(normalise(t) == norm for t in same):
                counts["duplicate_responses"] += 1
                continue
            same.append(r["response"])
        else:
            by_sig[sig] = [r["response"]]
        out.append(r)
    return out
