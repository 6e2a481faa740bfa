"""Group a pool's rows by instruction without holding the pool in memory.

Responses of one instruction are scattered over a dataset (UltraInteract rows share a `parent_id`) or over several
datasets (Tulu-3: the SFT mixture and four preference mixes). `Grouper` hash-partitions the rows to temporary files
by their key, then groups one partition at a time, so peak memory is about one partition (1/`partitions` of the
pool), not the pool. Output order is deterministic: partition by partition, and within one in order of first
appearance; records of a group keep their input order.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import orjson


def key_hash(key: str | bytes) -> str:
    """A stable 24-hex-digit (96-bit) digest of a group key: groups are told apart by it alone (a collision among
    a million keys has odds ~1e-17) and the instruction ids of grouped pools are built from it."""
    return hashlib.blake2b(key if isinstance(key, bytes) else key.encode("utf-8"), digest_size=12).hexdigest()


class Grouper:
    def __init__(self, workdir: str | Path | None = None, partitions: int = 64):
        self.dir = Path(tempfile.mkdtemp(prefix=".grape-group-", dir=workdir))
        self.n = partitions
        self.files = [open(self.dir / f"{i:03d}.jsonl", "wb") for i in range(partitions)]
        self.rows = 0

    def add(self, key: str | bytes, record: dict) -> None:
        """File `record` under `key`; only the key's digest is written (the key itself can be a long text)."""
        h = key_hash(key)
        self.files[int(h[:8], 16) % self.n].write(orjson.dumps([h, record]) + b"\n")
        self.rows += 1

    def groups(self) -> Iterator[tuple[str, list[dict]]]:
        """(key digest, records) for every group; the temporary files are removed afterwards."""
        try:
            for fh in self.files:
                fh.close()
            for i in range(self.n):
                part: dict[str, list[dict]] = {}
                with open(self.dir / f"{i:03d}.jsonl", "rb") as fh:
                    for line in fh:
                        h, record = orjson.loads(line)
                        part.setdefault(h, []).append(record)
                yield from part.items()
                del part
        finally:
            self.close()

    def close(self) -> None:
        for fh in self.files:
            fh.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def distinct(responses: list[dict], counts) -> list[dict]:
    """The responses ({response, source}) with repeats removed: the first of each whitespace-normalised text is kept
    (input order, so list the preferred source first) and each repeat counted as `duplicate_responses`.

    Only responses whose `signature` matches are normalised and compared, so a million long responses cost one
    C-speed pass each instead of a split into words."""
    from grape.data.conversations import normalise, signature

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
