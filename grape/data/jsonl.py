"""`data.kind: jsonl`: the user's own train and test files (`grape.contracts.TRAIN` / `TEST` rows).

Answers are normalised to strings (the correctness filter and evaluation compare text). `answer` is optional
in train (a pool without answers runs with `verify.drop_incorrect: false`); test rows need it.
"""

from __future__ import annotations

from typing import Mapping

from grape.contracts import TEST, TRAIN
from grape.io import read_jsonl


def load_user_splits(train_path: str, test_path: str) -> tuple[list[dict], list[dict]]:
    train = read_jsonl(train_path, TRAIN, unique="id", non_empty="train rows {id, instruction, response, answer?}")
    test = read_jsonl(test_path, TEST, unique="id", non_empty="test rows {id, instruction, answer}")
    for rows in (train, test):
        for row in rows:
            if row.get("answer") is not None:
                row["answer"] = str(row["answer"])
    return train, test


def load(d: Mapping, seed: int) -> tuple[list[dict], list[dict], dict]:
    train, test = load_user_splits(d["train_path"], d["test_path"])
    return train, test, {}
