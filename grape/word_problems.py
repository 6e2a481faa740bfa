"""Seeded arithmetic word problems: the demo's dataset, and the training text of the tiny test tokenizer.

They stand in for UltraInteract's math part with problems that 135M-270M models solve some of the time: one
or two steps over small numbers, a reference response that shows the working and ends with "The answer is N.".
Shared by the data stage (`grape.data.demo`) and the model stage (`grape.models.random_init`), so it lives
outside both.
"""

from __future__ import annotations

import random

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
    q = f"{name} has {a} {item}, buys {b} more, and then gives {c} to a friend. How many {item} does {name} have now?"
    s = a + b
    r = (
        f"{name} starts with {a} {item} and buys {b}, so {a} + {b} = {s}. Then {name} gives away {c}, "
        f"so {s} - {c} = {s - c}. The answer is {s - c}."
    )
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
    test = [
        {"id": f"test-{i:05d}", "instruction": row["instruction"], "answer": row["answer"]}
        for i, row in enumerate(rows[n_train:])
    ]
    return train, test
