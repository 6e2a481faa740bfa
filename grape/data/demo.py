"""`data.kind: demo`: seeded arithmetic word problems (`grape.word_problems`), disjoint train and test splits."""

from __future__ import annotations

from typing import Mapping

from grape.word_problems import demo_splits


def load(d: Mapping, seed: int) -> tuple[list[dict], list[dict], dict]:
    train, test = demo_splits(d["n_train"], d["n_test"], d["max_ops"], seed)
    return train, test, {}
