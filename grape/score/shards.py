"""Scatter/gather: a target's pool split into shards of whole instructions, and the shards joined again.

The assignment hashes the instruction id (sha256), so it depends neither on the pool's order nor on Python's
hash seed, and every shard count gives the same gathered scores.
"""

from __future__ import annotations

import hashlib
from typing import Iterable


def shard_of(instruction_id: str, n_shards: int) -> int:
    """Stable shard of an instruction: sha256 of its id, mod n_shards."""
    return int.from_bytes(hashlib.sha256(instruction_id.encode("utf-8")).digest()[:8], "big") % n_shards


def check_shard(shard_index: int, n_shards: int) -> None:
    if n_shards < 1 or not 0 <= shard_index < n_shards:
        raise ValueError(f"shard {shard_index} of {n_shards} does not exist")


def gather_shards(parts: Iterable[tuple[list[dict], list[dict]]]) -> tuple[list[dict], list[dict]]:
    """Join the (scored, skipped) results of all shards; sorted by candidate_id, duplicates refused."""
    scored, skipped = [], []
    for s, k in parts:
        scored.extend(s)
        skipped.extend(k)
    ids = [r["candidate_id"] for r in scored] + [r["candidate_id"] for r in skipped]
    if len(ids) != len(set(ids)):
        raise ValueError("a candidate appears in more than one shard")
    scored.sort(key=lambda r: r["candidate_id"])
    skipped.sort(key=lambda r: r["candidate_id"])
    return scored, skipped
