"""Streaming the pool into the scorer: a compact index first, then token ids one chunk at a time.

A million candidates do not fit in memory as Python token lists (100K took 2.6 GB), and tokenizing all of them
before the first forward pass leaves the accelerator idle for minutes. So scoring reads the pool twice:

1. `index_file` (or `index_rows` for rows already in memory) makes one cheap pass through the package's JSONL
   reader (`grape.io.iter_jsonl_located`, with orjson): each row is checked against `grape.contracts.POOL`, and
   only its candidate id, its place in the file and a hash of its instruction are kept (about 100 bytes a
   candidate; ~9 us a row, ~10 s for 1M rows on one core). Candidates with the same instruction text form a
   group; groups are put in the canonical order (by smallest candidate id, candidates by id) and cut into chunks
   of whole groups (`chunk_size` candidates). The kept rows' bytes are checksummed (the resume fingerprint).
2. `tokenized_chunks` re-reads one chunk's rows, tokenizes them with the fast tokenizer's batch API (each
   instruction's prompt once), applies the overlong policy and groups them by prompt ids, in a producer thread that
   stays at most `ahead` chunks ahead of the forward passes. Peak memory is the index plus `ahead + 1` chunks.
"""

from __future__ import annotations

import hashlib
import mmap
import queue
import threading
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

from grape.contracts import POOL
from grape.io import DataError, iter_jsonl_located
from grape.score.shards import check_shard, shard_of
from grape.score.tokens import ROW_FIELDS, fit_to_length, group_examples
from grape.template import Template


@dataclass
class PoolIndex:
    """Where each candidate of a pool (or of one shard of it) is, and the chunks it is scored in."""

    ids: list[str]  # candidate ids, in pool order
    chunks: list[list[int]]  # row numbers (into ids) per chunk, canonical order
    instructions: int  # distinct instruction texts
    fingerprint: str  # hash of the rows' content (resume refuses a partial file from other rows)
    fetch: Callable[[Sequence[int]], list[dict]] = field(repr=False, default=None)  # row numbers -> rows

    def close(self) -> None:
        closer = getattr(self.fetch, "close", None)
        if closer is not None:
            closer()


def _plan(ids: Sequence[str], keys: Sequence, chunk_size: int | None) -> tuple[list[list[int]], int]:
    """Group row numbers by instruction key; canonical order; cut into chunks of whole groups."""
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    ordered = []
    for members in groups.values():
        members.sort(key=ids.__getitem__)
        ordered.append(members)
    ordered.sort(key=lambda m: ids[m[0]])
    chunks, cur = [], []
    for members in ordered:
        cur.extend(members)
        if chunk_size and len(cur) >= chunk_size:
            chunks.append(cur)
            cur = []
    if cur:
        chunks.append(cur)
    return chunks, len(groups)


def index_rows(rows: Sequence[Mapping], chunk_size: int | None) -> PoolIndex:
    """Index rows already in memory (tests, benchmarks, `grape.score.checkpoint.score_pool`)."""
    seen, h = set(), hashlib.blake2b(digest_size=16)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {i}: expected a mapping, got {type(row).__name__}")
        for f in ROW_FIELDS:
            if f not in row:
                raise ValueError(f"row {i} (candidate_id={row.get('candidate_id')!r}): field '{f}' missing")
            if not isinstance(row[f], str):
                raise ValueError(
                    f"row {i} (candidate_id={row.get('candidate_id')!r}): field '{f}' must be a string, "
                    f"got {type(row[f]).__name__}"
                )
        if row["candidate_id"] in seen:
            raise ValueError(f"row {i}: duplicate candidate_id {row['candidate_id']!r}")
        seen.add(row["candidate_id"])
    ids = [r["candidate_id"] for r in rows]
    for i in sorted(range(len(rows)), key=ids.__getitem__):
        h.update(repr([rows[i][f] for f in ROW_FIELDS]).encode())
    chunks, n_instr = _plan(ids, [r["instruction"] for r in rows], chunk_size)
    return PoolIndex(ids, chunks, n_instr, h.hexdigest(), lambda nums: [rows[i] for i in nums])


class _FileRows:
    """Rows of a JSONL file by row number, read back through a memory map of the file."""

    def __init__(self, path, offsets: array, sizes: array):
        self.path, self.offsets, self.sizes = path, offsets, sizes
        self.fh = open(path, "rb")
        self.map = mmap.mmap(self.fh.fileno(), 0, access=mmap.ACCESS_READ) if len(offsets) else None

    def __call__(self, nums: Sequence[int]) -> list[dict]:
        import orjson

        return [orjson.loads(self.map[self.offsets[i] : self.offsets[i] + self.sizes[i]]) for i in nums]

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
        self.fh.close()


def index_file(path, chunk_size: int | None, shard: int = 0, shards: int = 1, progress: bool = True) -> PoolIndex:
    """Index a pool JSONL file (or the rows of one shard of it); every row is checked against POOL on the way."""
    import orjson
    from tqdm import tqdm

    check_shard(shard, shards)
    total = 0

    def keep(row) -> bool:  # every checked row passes here: count them, keep this shard's
        nonlocal total
        total += 1
        return shards == 1 or shard_of(row["instruction_id"], shards) == shard

    ids, keys, offsets, sizes = [], [], array("q"), array("i")
    crc, kept_bytes = 0, 0
    # The hot loop of a million-row pool: ~10 us a row. Grouping uses Python's str hash (stable within this
    # process, which is all the plan needs); the fingerprint is a CRC over the kept rows' bytes plus their count
    # and size (it only has to notice a different pool, not resist an adversary).
    rows = iter_jsonl_located(path, POOL, unique="candidate_id", loads=orjson.loads, keep=keep)
    with tqdm(desc="index pool", unit="row", disable=not progress, mininterval=2) as bar:
        for _, start, raw, row in rows:
            crc = zlib.crc32(raw, crc)
            kept_bytes += len(raw)
            ids.append(row["candidate_id"])
            keys.append(hash(row["instruction"]))
            offsets.append(start)
            sizes.append(len(raw))
            if not len(ids) & 0xFFF:
                bar.update(0x1000)
    if not total:
        raise DataError(path, None, None, "no rows: expected the candidate pool written by verify")
    chunks, n_instr = _plan(ids, keys, chunk_size)
    fingerprint = f"{shard}/{shards}:{len(ids)}:{kept_bytes}:{crc:08x}"
    return PoolIndex(ids, chunks, n_instr, fingerprint, _FileRows(path, offsets, sizes))


def tokenize_chunk(tokenizer, template: Template, rows: Sequence[Mapping], max_length: int, overlong: str):
    """One chunk's rows -> (groups by prompt ids, meta {id: (instruction_id, source, truncated)}, skipped rows)."""
    instructions = list(dict.fromkeys(r["instruction"] for r in rows))
    prompts = dict(zip(instructions, template.tokenize_prompts(tokenizer, instructions)))
    responses = template.tokenize_responses(tokenizer, [r["response"] for r in rows], add_eos=template.score_eos)
    meta, skipped, examples = {}, [], []
    for row, r in zip(rows, responses):
        p = prompts[row["instruction"]]
        r, status = fit_to_length(p, r, max_length, overlong)
        if r is None:
            skipped.append({"candidate_id": row["candidate_id"], "reason": status.split(":", 1)[1]})
            continue
        meta[row["candidate_id"]] = (row["instruction_id"], row["source"], status == "truncated")
        examples.append((row["candidate_id"], p, r))
    return group_examples(examples), meta, skipped


def tokenized_chunks(
    index: PoolIndex,
    chunk_numbers: Sequence[int],
    tokenizer,
    template: Template,
    max_length: int,
    overlong: str,
    ahead: int = 2,
) -> Iterator[tuple[int, tuple]]:
    """Yield (chunk number, tokenize_chunk(...)) for the given chunks, tokenized by a producer thread."""
    if ahead < 1:
        for ci in chunk_numbers:
            yield ci, tokenize_chunk(tokenizer, template, index.fetch(index.chunks[ci]), max_length, overlong)
        return
    q: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for ci in chunk_numbers:
                rows = index.fetch(index.chunks[ci])
                if not put((ci, tokenize_chunk(tokenizer, template, rows, max_length, overlong))):
                    return
            put(None)
        except BaseException as err:  # handed to the consumer, raised there
            put(err)

    worker = threading.Thread(target=produce, name="grape-tokenize", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=10)
