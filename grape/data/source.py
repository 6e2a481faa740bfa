"""Rows of a dataset as the hub ships it: a hub id, a local file, or a local copy of a hub repository.

Every importer reads through `Dataset`, so a pool is found the same way everywhere:
- a local `.jsonl` / `.json` (JSON Lines, or one JSON array as UltraInteract's older 704 MB file is),
  `.parquet` or `.arrow` file;
- a local directory (a `huggingface-cli download` or `snapshot_download` copy): its data files, those whose
  name contains the split when any does (hub layout `data/train-00000-of-00004.parquet`), else all of them;
- a path that looks local (`grape.hub.looks_local`: absolute, `./`, `../`, `~`, a data file suffix, more than
  one `/`) and does not exist: an error, `file not found: <path>`;
- anything else is a hub dataset id, read with `datasets.load_dataset(id, split=..., revision=...,
  streaming=True)`; offline (`HF_DATASETS_OFFLINE=1`) that reads the local cache and fails naming the id.
Rows stream: Parquet in record batches, JSON Lines line by line, so a million-row pool never sits in memory.
Errors name the dataset, the split and the row (1-based) or file line. `parts(n)` cuts a local dataset into up to
n datasets whose rows, read one after another, are its rows in order (runs of its data files, or byte ranges of one
JSON Lines file, at line starts, with the file's own line numbers), so an importer can read it on n cores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Mapping

from grape.io import DataError

_BLANK_START = (b"", b"\n", b"\r", b" ", b"\t")
EXTENSIONS = (".parquet", ".jsonl", ".json", ".arrow")
MIN_PART_BYTES = 32 << 20  # a byte range smaller than this costs more to fork than it saves


class Dataset:
    """One dataset split to read: `rows()` yields (where, row); `need(where, row, fields)` checks fields."""

    def __init__(
        self,
        path: str,
        split: str = "train",
        revision: str | None = None,
        name: str | None = None,
        experiment: str | None = None,
        allow_empty: bool = False,
    ):
        path = str(path)
        self.path = os.path.expanduser(path) if path.startswith("~") else path
        self.split, self.revision = split, revision
        self.name = name or Path(self.path).name or self.path
        self.experiment = experiment  # named in the prefetch command when the dataset is not in the cache
        self.allow_empty = allow_empty  # a dataset without rows is an error unless this says the pool may lack it
        self._files: list[Path] | None = None  # a part: these files only
        self._span: tuple[int, int] | None = None  # a part: bytes [start, end) of its one JSON Lines file

    def _part(self, files: list[Path], span: tuple[int, int] | None = None) -> "Dataset":
        part = Dataset(self.path, self.split, self.revision, self.name, self.experiment, self.allow_empty)
        part._files, part._span = files, span
        return part

    def parts(self, n: int) -> list["Dataset"]:
        """Up to `n` parts of a local dataset (see the module docstring); `[self]` when it cannot or need not split."""
        if n <= 1 or self._files is not None or not os.path.exists(self.path):
            return [self]
        files = self.files()
        if len(files) >= n:
            cuts = [len(files) * i // n for i in range(n + 1)]
            return [self._part(files[a:b]) for a, b in zip(cuts, cuts[1:])]
        size = files[0].stat().st_size
        if len(files) > 1 or files[0].suffix not in (".jsonl", ".json") or size < 2 * MIN_PART_BYTES:
            return [self]
        with open(files[0], "rb") as fh:
            if fh.read(64).lstrip().startswith(b"["):  # one JSON array: not splittable at line starts
                return [self]
            n = min(n, size // MIN_PART_BYTES)
            cuts = [0]
            for i in range(1, n):
                fh.seek(max(size * i // n, cuts[-1]))
                fh.readline()  # to the next line start
                cuts.append(min(fh.tell(), size))
        cuts.append(size)
        return [self._part(files, (a, b)) for a, b in zip(cuts, cuts[1:]) if b > a] or [self]

    def label(self) -> str:
        return f"{self.path} [{self.split}]"

    def files(self) -> list[Path]:
        p = Path(self.path)
        if p.is_file():
            return [p]
        found = sorted(
            f for f in p.rglob("*") if f.is_file() and f.name.endswith(EXTENSIONS) and ".cache" not in f.parts
        )
        if not found:
            raise DataError(self.path, None, None, f"no data files ({', '.join(EXTENSIONS)}) in this directory")
        mine = [f for f in found if self.split in f.name]
        return mine or found

    def rows(self) -> Iterator[tuple[str, dict]]:
        """(where, row): `where` is `file:line` for JSON Lines, `file row N` otherwise, for error messages."""
        if self._span is not None:
            yield from _json_rows(self._files[0], self._span)
            return
        if not os.path.exists(self.path):
            from grape.hub import is_hub_id

            is_hub_id(self.path)  # a local-looking path that does not exist: FileNotFoundError naming it
            yield from self._hub_rows()
            return
        for f in self._files if self._files is not None else self.files():
            if f.suffix == ".parquet":
                yield from _parquet_rows(f)
            elif f.suffix == ".arrow":
                yield from _arrow_rows(f)
            else:
                yield from _json_rows(f)

    def _hub_rows(self) -> Iterator[tuple[str, dict]]:
        """A hub dataset: its snapshot in the local cache (what `snakemake prefetch` fetched), read as a local
        directory; online (HF_HUB_OFFLINE=0), the `datasets` streaming reader; offline and not cached, an error
        that names the dataset and the prefetch command."""
        snapshot = self._cached_snapshot()
        if snapshot is not None:
            local = Dataset(snapshot, self.split, self.revision, self.name, self.experiment)
            for where, row in local.rows():
                yield f"{self.path}: {where}", row
            return
        from grape.runtime import hub_offline

        if hub_offline():
            from grape.hub import missing_message

            raise DataError(
                self.label(), None, None, missing_message("dataset", self.path, self.revision, self.experiment)
            )
        import datasets

        try:
            ds = datasets.load_dataset(self.path, split=self.split, revision=self.revision, streaming=True)
        except Exception as err:  # offline, unknown id, missing split: say which dataset
            raise DataError(
                self.label(),
                None,
                None,
                f"cannot open the dataset ({type(err).__name__}: {err}); give a local path, "
                "or prefetch it on a machine with internet",
            ) from None
        for i, row in enumerate(ds, start=1):
            yield f"{self.label()} row {i}", row

    def _cached_snapshot(self) -> str | None:
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(self.path, repo_type="dataset", revision=self.revision, local_files_only=True)
        except Exception:  # not cached (or not a valid id): the caller decides
            return None

    def need(self, where: str, row: Mapping, fields: Mapping[str, type | tuple]) -> None:
        """Stop with the dataset, split, row and field when a mapped field is absent or of the wrong type."""
        for field, types in fields.items():
            if field not in row:
                raise DataError(where, None, field, f"missing in dataset {self.label()} (have: {', '.join(row)})")
            if not isinstance(row[field], types):
                raise DataError(where, None, field, f"expected {types}, got {type(row[field]).__name__}")


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            n += 1
            yield f"{path} row {n}", row


def _arrow_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(path)
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(path)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        batches = iter(reader)
    n = 0
    for batch in batches:
        for row in batch.to_pylist():
            n += 1
            yield f"{path} row {n}", row


def _lines_before(path: Path, offset: int) -> int:
    n, left = 0, offset
    with open(path, "rb") as fh:
        while left > 0:
            block = fh.read(min(left, 16 << 20))
            n += block.count(b"\n")
            left -= len(block)
    return n


def _json_rows(path: Path, span: tuple[int, int] | None = None) -> Iterator[tuple[str, dict]]:
    import orjson

    with open(path, "rb") as fh:
        head = fh.read(64).lstrip()
    # one JSON array (the older hub files): read through the datasets JSON loader
    if span is None and head.startswith(b"["):
        import datasets

        ds = datasets.load_dataset("json", data_files=str(path), split="train", streaming=True)
        for i, row in enumerate(ds, start=1):
            yield f"{path} row {i}", row
        return
    start, end = span or (0, None)
    label = str(path)
    with open(path, "rb", buffering=1 << 20) as fh:
        fh.seek(start)
        offset = start
        for lineno, raw in enumerate(fh, start=1 + (_lines_before(path, start) if start else 0)):
            if end is not None:
                if offset >= end:
                    break
                offset += len(raw)
            if raw[:1] in _BLANK_START and not raw.strip():
                continue
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError as err:
                raise DataError(path, lineno, None, f"malformed JSON: {err}") from None
            if not isinstance(row, dict):
                raise DataError(path, lineno, None, f"expected a JSON object, got {type(row).__name__}")
            yield f"{label}:{lineno}", row
