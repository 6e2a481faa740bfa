"""What an import read, kept and dropped: counts for meta.json and the report, and every dropped row with why.

Rows an importer cannot use (an empty instruction or response, a conversation with no assistant answer) are
never skipped silently: `drop` counts them by reason and lists them (where, reason, id) for `data/dropped.jsonl`.
Rules that thin the pool on purpose (fewer than two distinct responses, a duplicate response) are counted with
`add` only: they are decisions of the config, not defects of the input.
"""

from __future__ import annotations

from collections import Counter


class Tally:
    def __init__(self):
        self.counts: Counter = Counter()
        self.dropped: list[dict] = []
        self.info: dict = {}  # non-count facts for meta.json and the report (e.g. licences per subset)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def drop(self, where: str, reason: str, row_id=None) -> None:
        self.counts[f"dropped_{reason}"] += 1
        self.dropped.append({"where": where, "reason": reason, "id": None if row_id is None else str(row_id)})
