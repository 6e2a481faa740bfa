"""Chunked, resumable sampling for every backend: a killed or failed job asks only for what is still missing.

The instructions are cut into chunks of `sample.batch_size` (chunk c = rows c*B .. c*B+B-1 of the train file, a
fixed cut whatever has been done). A finished chunk's candidates are appended to `<output>.partial` and its index to
`<output>.partial.done`, in that order, each flushed to disk; so after a kill every chunk listed as done is whole in
the partial file (a half-written tail past the last listed chunk is cut off on resume). A rerun reads them, hands
the backend only the chunks not done, and the final file is the partial one's rows sorted back into chunk order:
the same file an uninterrupted run writes, because backends seed by chunk (hf) or by request (per instruction, or per
group of instructions cut at fixed places in a chunk: openai's prompts_per_request), never by how many came before.
Each chunk is requested once per run. The partial files are trusted only by the job that wrote them
(`grape.resume`: same settings, train file, model content, code); any other job sets them aside and starts over.

Requests a backend gave up on (after its retries) come back as failures: they are written to
the stage's `missing` file (`logs/sample/<source>.missing.jsonl`, kept when the job fails) with the error, counted, and the stage fails unless their share is at most
`sample.allow_missing`. The partial files are removed once the output is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator


def partial_paths(out: str) -> tuple[Path, Path]:
    return Path(f"{out}.partial"), Path(f"{out}.partial.done")


def chunks(rows: list[dict], size: int) -> list[tuple[int, list[dict]]]:
    return [(c, rows[i : i + size]) for c, i in enumerate(range(0, len(rows), size))]


def _index(done_path: Path) -> list[dict]:
    """The index lines that vouch for chunks; a torn last line (killed while writing it) vouches for nothing."""
    lines = [line for line in done_path.read_text().splitlines() if line.strip()] if done_path.exists() else []
    entries = []
    for i, line in enumerate(lines):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
    return entries


def load_done(out: str) -> tuple[set[int], int]:
    """(chunk indices already done, byte length of the partial file that holds exactly them)."""
    data, done_path = partial_paths(out)
    if not data.exists():
        return set(), 0
    entries = _index(done_path)
    return {e["chunk"] for e in entries}, (entries[-1]["bytes"] if entries else 0)


class Writer:
    """Appends finished chunks to the partial files (rows first, then the index line that vouches for them)."""

    def __init__(self, out: str, keep_bytes: int):
        self.data_path, self.done_path = partial_paths(out)
        mode = "r+b" if self.data_path.exists() else "wb"
        self.data = open(self.data_path, mode)
        self.data.truncate(keep_bytes)  # drop a tail written after the last chunk listed as done
        self.data.seek(keep_bytes)
        # the index rewritten without a torn last line (so appends stay parseable); none without its data file
        entries = _index(self.done_path) if mode == "r+b" else []
        self.done = open(self.done_path, "w")
        self.done.writelines(json.dumps(e) + "\n" for e in entries)

    def chunk(self, index: int, rows: Iterable[dict]) -> None:
        for row in rows:
            self.data.write(json.dumps({"chunk": index, **row}, ensure_ascii=False).encode("utf-8") + b"\n")
        self.data.flush()
        os.fsync(self.data.fileno())
        self.done.write(json.dumps({"chunk": index, "bytes": self.data.tell()}) + "\n")
        self.done.flush()
        os.fsync(self.done.fileno())

    def close(self) -> None:
        self.data.close()
        self.done.close()


def read_partial(out: str) -> Iterator[dict]:
    data, _ = partial_paths(out)
    done, size = load_done(out)
    with open(data, "rb") as fh:
        for line in fh.read(size).splitlines():
            row = json.loads(line)
            if row["chunk"] in done:
                yield row
