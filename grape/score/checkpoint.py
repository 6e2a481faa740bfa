"""The checkpointed driver every scoring backend runs under: chunks, a partial file, resume.

`score_pool` prepares the pool (`grape.score.tokens`), cuts it into chunks of whole instructions, hands each
chunk to the backend's `score(groups, pbar)` and appends the chunk's rows to `<output>.partial` (one JSON line
per chunk, fsynced). A rerun skips the chunks already there, so a killed job resumes where it stopped and the
result is identical to an uninterrupted run. A partial file written for another pool, template, length policy,
chunking or backend setting (the backend's `fingerprint()`) is refused.

A backend is any object with `name`, `fingerprint() -> dict` and `score(groups, pbar) -> [(candidate_id,
sum_logprob, n_tokens)]`; it writes no files itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from tqdm import tqdm

from grape.score.results import score_rows
from grape.score.tokens import ROW_FIELDS, Group, plan_chunks, prepare
from grape.template import Template

PARTIAL_FORMAT = "grape-score-partial/2"


class Scorer(Protocol):
    name: str

    def fingerprint(self) -> dict: ...

    def score(self, groups: Sequence[Group], pbar=None) -> list[tuple]: ...


def pool_fingerprint(
    template: Template,
    rows: Sequence[Mapping],
    max_length: int,
    overlong: str,
    chunk_size: int | None,
    extra: Mapping | None = None,
) -> str:
    """What a partial file's chunks depend on: the pool's text, the template, the length policy, the plan."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
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
    for row in sorted(rows, key=lambda r: r["candidate_id"]):
        h.update(json.dumps([row[f] for f in ROW_FIELDS]).encode())
    return h.hexdigest()


def read_partial(path: Path, fingerprint: str) -> dict[int, list[dict]]:
    """Completed chunks of a partial file. A torn last line (a kill mid-write) is cut off the file."""
    done: dict[int, list[dict]] = {}
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
            raise ValueError(
                f"{path}: partial scores from a different pool, model or settings; delete it to start over"
            )
        done[int(rec["chunk"])] = rec["scored"]
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


def score_pool(
    scorer: Scorer,
    tokenizer,
    template: Template,
    rows: Iterable[Mapping],
    max_length: int,
    overlong: str = "skip",
    *,
    chunk_size: int | None = None,
    partial_path: str | os.PathLike | None = None,
    progress: bool = True,
    on_chunk: Callable[[int, list[dict]], None] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Score pool rows with `scorer`. Returns (scored, skipped), both sorted by candidate_id.

    chunk_size: candidates per chunk (whole instructions; None: one chunk). partial_path: checkpoint file
    (None: no checkpoint). `on_chunk(index, rows)` runs after a chunk is durable (used by tests to stop a run).
    The caller writes the final output atomically, then deletes the partial file.
    """
    rows = list(rows)
    prep = prepare(tokenizer, template, rows, max_length, overlong)
    chunks = plan_chunks(prep.groups, chunk_size)
    path, fp, done = None, None, {}
    if partial_path is not None:
        path = Path(partial_path)
        fp = pool_fingerprint(
            template, rows, max_length, overlong, chunk_size, {"backend": scorer.name, **scorer.fingerprint()}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        done = read_partial(path, fp)
    scored = []
    with tqdm(total=len(prep.meta), desc=f"score ({scorer.name})", unit="cand", disable=not progress) as pbar:
        for ci, chunk in enumerate(chunks):
            keys = sorted(k for g in chunk for k in g.keys)
            if ci in done:
                if sorted(r["candidate_id"] for r in done[ci]) != keys:
                    raise ValueError(f"{path}: chunk {ci} does not match this pool; delete it to start over")
                scored.extend(done[ci])
                pbar.update(len(keys))
                continue
            res = score_rows(prep, scorer.score(chunk, pbar))
            if path is not None:
                _append(path, {"format": PARTIAL_FORMAT, "fingerprint": fp, "chunk": ci, "scored": res})
            if on_chunk is not None:
                on_chunk(ci, res)
            scored.extend(res)
    scored.sort(key=lambda s: s["candidate_id"])
    return scored, prep.skipped
