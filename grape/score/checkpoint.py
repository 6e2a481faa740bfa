"""The checkpointed driver every scoring backend runs under: chunks, a partial file, resume.

The pool is indexed and cut into chunks of whole instructions (`grape.score.stream`); each chunk is tokenized
by a producer thread while the previous one is scored, handed to the backend's `score(groups, pbar)`, and its
rows (scored and skipped) are appended to `<output>.partial` (one JSON line per chunk, fsynced). A rerun skips
the chunks already there, so a killed job resumes where it stopped and the result is identical to an
uninterrupted run. A partial file written by another job (`grape.resume`: settings, pool, model content, code), or
for another pool, template, length policy, chunking or backend setting (the backend's `fingerprint()`: dtype and
device included, which `auto` may choose differently on another node) is set aside and the job starts over. `score_file` streams a pool file (the stage); `score_pool` takes
rows already in memory (tests, benchmarks).

A backend is any object with `name`, `fingerprint() -> dict` and `score(groups, pbar) -> [(candidate_id,
sum_logprob, n_tokens)]`; it writes no files itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from tqdm import tqdm

from grape.score.results import score_rows
from grape.score.stream import PoolIndex, index_file, index_rows, tokenized_chunks
from grape.score.tokens import OVERLONG, Group
from grape.template import Template

PARTIAL_FORMAT = "grape-score-partial/2"


class Scorer(Protocol):
    name: str

    def fingerprint(self) -> dict: ...

    def score(self, groups: Sequence[Group], pbar=None) -> list[tuple]: ...


def run_fingerprint(
    index: PoolIndex,
    template: Template,
    max_length: int,
    overlong: str,
    chunk_size: int | None,
    extra: Mapping | None = None,
) -> str:
    """What a partial file's chunks depend on: the rows, the template, the length policy, the plan, the backend."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "rows": index.fingerprint,
                "template": [template.prompt, template.response, template.score_eos],
                "max_length": max_length,
                "overlong": overlong,
                "chunk_size": chunk_size,
                "extra": dict(extra or {}),
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    return h.hexdigest()


def read_partial(path: Path, fingerprint: str) -> dict[int, dict]:
    """Completed chunks of a partial file ({chunk: {"scored": [...], "skipped": [...]}}); a torn last line (a kill
    mid-write) is cut off the file."""
    done: dict[int, dict] = {}
    if not path.exists():
        return done
    good = 0
    with open(path, "rb") as fh:
        data = fh.read()
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(rec, dict) or rec.get("format") != PARTIAL_FORMAT or rec.get("fingerprint") != fingerprint:
            # another plan, backend, dtype or device (an `auto` dtype on another node): start over, keep it aside
            path.replace(path.with_name(path.name + ".stale"))
            print(
                f"{path}: set aside (renamed *.stale) and starting over: its chunks were scored with another "
                "pool, plan, backend, dtype or device",
                file=sys.stderr,
                flush=True,
            )
            return {}
        done[int(rec["chunk"])] = rec
        good += len(line)
    if good < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return done


def _append(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def score_index(
    scorer: Scorer,
    tokenizer,
    template: Template,
    index: PoolIndex,
    max_length: int,
    overlong: str = "skip",
    *,
    chunk_size: int | None = None,
    partial_path: str | os.PathLike | None = None,
    progress: bool = True,
    on_chunk: Callable[[int, list[dict]], None] | None = None,
    ahead: int = 2,
) -> tuple[list[dict], list[dict]]:
    """Score an indexed pool chunk by chunk. Returns (scored, skipped), both sorted by candidate_id.

    `chunk_size` must be the one the index was planned with (it is part of the resume fingerprint).
    `on_chunk(index, rows)` runs after a chunk is durable (tests use it to stop a run). `ahead`: chunks the
    tokenizer thread may prepare in advance (0: tokenize in the scoring thread).
    """
    if overlong not in OVERLONG:
        raise ValueError(f"overlong must be 'skip' or 'truncate', got {overlong!r}")
    path, fp, done = None, None, {}
    if partial_path is not None:
        path = Path(partial_path)
        fp = run_fingerprint(
            index, template, max_length, overlong, chunk_size, {"backend": scorer.name, **scorer.fingerprint()}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        done = read_partial(path, fp)
    scored, skipped = [], []
    todo = []
    for ci, chunk in enumerate(index.chunks):
        if ci in done:
            rec = done[ci]
            if sorted(r["candidate_id"] for r in rec["scored"] + rec["skipped"]) != sorted(index.ids[i] for i in chunk):
                raise ValueError(f"{path}: chunk {ci} does not match this pool; delete it to start over")
            scored.extend(rec["scored"])
            skipped.extend(rec["skipped"])
        else:
            todo.append(ci)
    total = sum(len(c) for c in index.chunks)
    with tqdm(total=total, desc=f"score ({scorer.name})", unit="cand", disable=not progress) as pbar:
        pbar.update(len(scored) + len(skipped))
        for ci, (groups, meta, skip) in tokenized_chunks(index, todo, tokenizer, template, max_length, overlong, ahead):
            res = score_rows(meta, scorer.score(groups, pbar))
            skip.sort(key=lambda s: s["candidate_id"])
            pbar.update(len(skip))
            if path is not None:
                _append(
                    path, {"format": PARTIAL_FORMAT, "fingerprint": fp, "chunk": ci, "scored": res, "skipped": skip}
                )
            if on_chunk is not None:
                on_chunk(ci, res)
            scored.extend(res)
            skipped.extend(skip)
    scored.sort(key=lambda s: s["candidate_id"])
    skipped.sort(key=lambda s: s["candidate_id"])
    return scored, skipped


def score_pool(
    scorer: Scorer,
    tokenizer,
    template: Template,
    rows: Iterable[Mapping],
    max_length: int,
    overlong: str = "skip",
    *,
    chunk_size: int | None = None,
    **driver,
) -> tuple[list[dict], list[dict]]:
    """Score pool rows already in memory with `scorer` (see `score_index` for the options)."""
    index = index_rows(list(rows), chunk_size)
    return score_index(scorer, tokenizer, template, index, max_length, overlong, chunk_size=chunk_size, **driver)


def score_file(
    scorer_factory: Callable[[], Scorer],
    tokenizer,
    template: Template,
    path,
    max_length: int,
    overlong: str = "skip",
    *,
    chunk_size: int | None = None,
    shard: int = 0,
    shards: int = 1,
    index: PoolIndex | None = None,
    **driver,
) -> tuple[list[dict], list[dict]]:
    """Stream a pool JSONL file (one shard of it) through the scorer; the scorer is built only when there is
    something to score (an empty shard loads no model)."""
    own = index is None  # an index handed in stays open: its owner closes it
    index = index or index_file(path, chunk_size, shard, shards, progress=driver.get("progress", True))
    try:
        if not index.ids:
            return [], []
        return score_index(
            scorer_factory(), tokenizer, template, index, max_length, overlong, chunk_size=chunk_size, **driver
        )
    finally:
        if own:
            index.close()
