"""`data.kind: demo`: seeded arithmetic word problems (`grape.word_problems`), disjoint train and test splits."""

from __future__ import annotations

from typing import Mapping

from grape.word_problems import demo_splits


def load(d: Mapping, seed: int, tally, workdir) -> tuple[list[dict], list[dict]]:
    train, test = demo_splits(d["n_train"], d["n_test"], d["max_ops"], seed)
    rows = [
        {
            "id": r["id"],
            "instruction": r["instruction"],
            "responses": [{"response": r["response"], "source": "original"}],
            "answer": r["answer"],
        }
        for r in train
    ]
    return rows, test
