"""The `data` stage: train instructions (each with a reference response) and a held-out test split.

The demo stands in for UltraInteract's math part with arithmetic word problems that 135M-270M models
solve some of the time: one or two steps over small numbers, a reference response that shows the
working and ends with "The answer is N.". A user's own data comes in as JSONL (`data.kind: jsonl`).
"""

from __future__ import annotations

import random
from typing import Mapping

from grape.io import DataError, read_jsonl, write_jsonl

TRAIN_SPEC = {"id": ((str,), True, True), "instruction": ((str,), True, True), "response": ((str,), True, True),
              "answer": ((str, int, float), True, False)}
TEST_SPEC = {"id": ((str,), True, True), "instruction": ((str,), True, True),
             "answer": ((str, int, float), True, False)}

_NAMES = ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Leo", "Emma", "Max", "Zoe", "Noah", "Ella"]
_ITEMS = ["apples", "books", "marbles", "pencils", "stickers", "cookies", "cards", "shells", "coins", "balloons"]


def _one_step(rng: random.Random) -> tuple[str, str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    kind = rng.choice(["add", "sub", "mul"])
    if kind == "add":
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
        r = f"{name} has {a} {item} and gets {b} more, so {a} + {b} = {a + b}. The answer is {a + b}."
        return q, r, a + b
    if kind == "sub":
        a = rng.randint(6, 25)
        b = rng.randint(1, a - 1)
        q = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
        r = f"{name} starts with {a} {item} and gives away {b}, so {a} - {b} = {a - b}. The answer is {a - b}."
        return q, r, a - b
    a, b = rng.randint(2, 9), rng.randint(2, 6)
    q = f"{name} has {b} boxes with {a} {item} in each box. How many {item} does {name} have?"
    r = f"There are {b} boxes with {a} {item} each, so {b} * {a} = {a * b}. The answer is {a * b}."
    return q, r, a * b


def _two_step(rng: random.Random) -> tuple[str, str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(3, 15), rng.randint(2, 10)
    c = rng.randint(1, a + b - 1)
    q = (f"{name} has {a} {item}, buys {b} more, and then gives {c} to a friend. "
         f"How many {item} does {name} have now?")
    s = a + b
    r = (f"{name} starts with {a} {item} and buys {b}, so {a} + {b} = {s}. Then {name} gives away {c}, "
         f"so {s} - {c} = {s - c}. The answer is {s - c}.")
    return q, r, s - c


def make_problem(rng: random.Random, max_ops: int) -> tuple[str, str, int]:
    if max_ops >= 2 and rng.random() < 0.3:
        return _two_step(rng)
    return _one_step(rng)


def demo_splits(n_train: int, n_test: int, max_ops: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic train/test problems; no instruction text appears in both splits."""
    rng = random.Random(f"grape-demo-{seed}")
    seen: set[str] = set()
    rows: list[dict] = []
    while len(rows) < n_train + n_test:
        q, r, a = make_problem(rng, max_ops)
        if q in seen:
            continue
        seen.add(q)
        rows.append({"instruction": q, "response": r, "answer": str(a)})
    train = [{"id": f"train-{i:05d}", **row} for i, row in enumerate(rows[:n_train])]
    test = [{"id": f"test-{i:05d}", "instruction": row["instruction"], "answer": row["answer"]}
            for i, row in enumerate(rows[n_train:])]
    return train, test


def load_user_splits(train_path: str, test_path: str) -> tuple[list[dict], list[dict]]:
    train = read_jsonl(train_path, TRAIN_SPEC, unique="id")
    test = read_jsonl(test_path, TEST_SPEC, unique="id")
    for rows, path in ((train, train_path), (test, test_path)):
        if not rows:
            raise DataError(path, None, None, "no rows")
        for row in rows:
            row["answer"] = str(row["answer"])
    return train, test


def run(params: Mapping, train_out: str, test_out: str) -> dict:
    d = params["data"]
    if d["kind"] == "demo":
        train, test = demo_splits(d["n_train"], d["n_test"], d["max_ops"], params["seed"])
    else:
        train, test = load_user_splits(d["train_path"], d["test_path"])
    write_jsonl(train_out, train)
    write_jsonl(test_out, test)
    return {"train": len(train), "test": len(test)}
