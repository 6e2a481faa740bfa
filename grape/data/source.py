"""Rows of a dataset as the hub ships it: a hub id, a local file, or a local copy of a hub repository.

Every importer reads through `Dataset`, so a pool is found the same way everywhere:
- a local `.jsonl` / `.json` (JSON Lines, or one JSON array as UltraInteract's older 704 MB file is),
  `.parquet` or `.arrow` file;
- a local directory (a `huggingface-cli download` or `snapshot_download` copy): its data files, those whose
  name contains the split when any does (hub layout `data/train-00000-of-00004.parquet`), else all of them;
- anything else is a hub dataset id, read with `datasets.load_dataset(id, split=..., revision=...,
  streaming=True)`; offline (`HF_DATASETS_OFFLINE=1`) that reads the local cache and fails naming the id.
Rows stream: Parquet in record batches, JSON Lines line by line, so a million-row pool never sits in memory.
Errors name the dataset, the split and the row (1-based) or file line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Mapping

from grape.io import DataError

EXTENSIONS = (".parquet", ".jsonl", ".json", ".arrow")


class Dataset:
    """One dataset split to read: `rows()` yields (where, row); `need(where, row, fields)` checks fields."""

    def __init__(self, path: str, split: str = "train", revision: str | None = None, name: str | None = None):
        self.path, self.split, self.revision = str(path), split, revision
        self.name = name or Path(self.path).name or self.path

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
        if not os.path.exists(self.path):
            yield from self._hub_rows()
            return
        for f in self.files():
            if f.suffix == ".parquet":
                yield from _parquet_rows(f)
            elif f.suffix == ".arrow":
                yield from _arrow_rows(f)
            else:
                yield from _json_rows(f)

    def _hub_rows(self) -> Iterator[tuple[str, dict]]:
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


def _json_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import orjson

    with open(path, "rb") as fh:
        head = fh.read(64).lstrip()
    if head.startswith(b"["):  # one JSON array: the older hub files; read through the datasets JSON loader
        import datasets

        ds = datasets.load_dataset("json", data_files=str(path), split="train", streaming=True)
        for i, row in enumerate(ds, start=1):
            yield f"{path} row {i}", row
        return
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError as err:
                raise DataError(path, lineno, None, f"malformed JSON: {err}") from None
            if not isinstance(row, dict):
                raise DataError(path, lineno, None, f"expected a JSON object, got {type(row).__name__}")
            yield f"{path}:{lineno}", row
