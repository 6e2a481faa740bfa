"""The rows every scoring backend's numbers become (`grape.contracts.SCORED` / `SKIPPED`): built here, once."""

from __future__ import annotations

from collections import Counter
from typing import Iterable


def score_rows(meta: dict, results: Iterable[tuple]) -> list[dict]:
    """(candidate_id, sum_logprob, n_tokens) triples -> scored rows, sorted by candidate_id.

    `meta` maps candidate_id -> (instruction_id, source, truncated)."""
    out = []
    for key, total, n in results:
        instruction_id, source, truncated = meta[key]
        out.append(
            {
                "candidate_id": key,
                "instruction_id": instruction_id,
                "source": source,
                "n_tokens": n,
                "sum_logprob": total,
                "mean_logprob": total / n,
                "truncated": truncated,
            }
        )
    out.sort(key=lambda s: s["candidate_id"])
    return out


def skip_reasons(skipped: list[dict]) -> dict[str, int]:
    return dict(Counter(row["reason"] for row in skipped))


def summary(scored: list[dict], skipped: list[dict]) -> dict:
    """The counts written to a score output's meta.json."""
    return {
        "scored": len(scored),
        "scored_tokens": sum(int(r["n_tokens"]) for r in scored),
        "truncated": sum(bool(r.get("truncated")) for r in scored),
        "skipped": len(skipped),
        "skipped_by_reason": skip_reasons(skipped),
    }
