"""`data.kind: jsonl`: the user's own train and test files, one instruction per train row.

Train rows: `{id, instruction, response | responses, answer?, task?, check?}`; `responses` is a list of strings or
of `{response, source}` objects, for an instruction with several existing responses; a bare `response` is the
single reference (source `original`). Answers are normalised to strings (the correctness filter and evaluation
compare text). `answer` is optional in train (a pool without answers runs with `verify.drop_incorrect: false`);
test rows need it. For any other file layout (field names, chat `messages`, one row per response) use
`data.kind: generic`.
"""

from __future__ import annotations

from typing import Mapping

from grape.contracts import TEST, TRAIN
from grape.io import DataError, Field, iter_jsonl_located, read_jsonl

USER_TRAIN = {
    **{k: v for k, v in TRAIN.items() if k != "responses"},
    "response": Field((str,), False, True, "the single reference response"),
    "responses": Field((list,), False, False, "several responses: strings or {response, source}"),
}


def _responses(path, lineno: int, row: dict) -> list[dict]:
    if ("response" in row) == ("responses" in row):
        raise DataError(path, lineno, "response", "give exactly one of `response` and `responses`")
    if "response" in row:
        return [{"response": row["response"], "source": "original"}]
    out = []
    for i, item in enumerate(row["responses"]):
        item = {"response": item, "source": "original"} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get("response"), str) or not item["response"].strip():
            raise DataError(path, lineno, f"responses[{i}]", "expected a non-empty string or {response, source}")
        out.append({"response": item["response"], "source": str(item.get("source") or "original")})
    return out


def load_user_splits(train_path: str, test_path: str) -> tuple[list[dict], list[dict]]:
    train = []
    for lineno, _, _, row in iter_jsonl_located(train_path, USER_TRAIN, unique="id"):
        row = {k: v for k, v in row.items() if k in TRAIN or k == "response"}
        row["responses"] = _responses(train_path, lineno, row)
        row.pop("response", None)
        train.append(row)
    if not train:
        raise DataError(train_path, None, None, "no rows: expected train rows {id, instruction, response, answer?}")
    test = read_jsonl(test_path, TEST, unique="id", non_empty="test rows {id, instruction, answer}")
    for rows in (train, test):
        for row in rows:
            if row.get("answer") is not None:
                row["answer"] = str(row["answer"])
    return train, test


def load(d: Mapping, seed: int, tally, workdir) -> tuple[list[dict], list[dict]]:
    return load_user_splits(d["train_path"], d["test_path"])
