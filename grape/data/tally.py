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

    def fresh(self) -> "Tally":
        """An empty tally for one worker process of the same import (`grape.data.grouping`); `merge` adds it back."""
        return Tally()

    def merge(self, other: "Tally") -> None:
        """Add a worker's tally: counts summed, dropped rows appended (workers are merged in input order, so the list
        is the one a single process makes), info dicts updated and lists extended."""
        self.counts.update(other.counts)
        self.dropped.extend(other.dropped)
        for key, value in other.info.items():
            mine = self.info.get(key)
            if isinstance(mine, dict) and isinstance(value, dict):
                mine.update(value)
            elif isinstance(mine, list) and isinstance(value, list):
                mine.extend(value)
            else:
                self.info[key] = value
