"""`data.kind: generic`: a user's own pool in any layout, by field mapping, through the real data stage."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grape import data
from grape.contracts import TRAIN
from grape.io import DataError, check_row, read_jsonl

ROWS = [
    {"prompt": "What is 2+2?", "output": "4", "model": "a", "gold": "4", "kind": "math"},
    {"prompt": "Name a colour.", "output": "Red.", "model": "a", "gold": None, "kind": "chat"},
    {"prompt": "What is  2+2? ", "output": "It is 4.", "model": "b", "gold": "4", "kind": "math"},
    {"prompt": "Name a colour.", "output": "Red. ", "model": "b", "gold": None, "kind": "chat"},  # same text: one
    {"prompt": "Say hi.", "output": "   ", "model": "a", "gold": None, "kind": "chat"},  # empty: dropped, listed
    {"prompt": "Only once.", "output": "Yes.", "model": "a", "gold": None, "kind": "chat"},
]
FIELDS = {"instruction": "prompt", "response": "output", "source": "model", "answer": "gold", "task": "kind"}


def _run(tmp_path, path, **extra):
    params = {"seed": 0, "data": {"kind": "generic", "min_responses": 1, "path": str(path), "fields": FIELDS, **extra}}
    out = tmp_path / "out"
    counts = data.run(params, str(out / "train.jsonl"), str(out / "test.jsonl"), str(out / "dropped.jsonl"))
    return read_jsonl(out / "train.jsonl"), read_jsonl(out / "dropped.jsonl"), counts


def test_pairs_are_grouped_by_normalised_instruction_from_jsonl_and_parquet(tmp_path):
    jl = tmp_path / "pool.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "pool.parquet")
    train, dropped, counts = _run(tmp_path, jl, min_responses=2)
    assert _run(tmp_path, tmp_path / "pool.parquet", min_responses=2)[0] == train
    by_text = {r["instruction"]: r for r in train}
    assert set(by_text) == {"What is 2+2?"}  # "Name a colour." has one distinct response; "Only once." one
    math = by_text["What is 2+2?"]
    assert [(x["source"], x["response"]) for x in math["responses"]] == [("a", "4"), ("b", "It is 4.")]
    assert math["answer"] == "4" and math["task"] == "math" and math["id"].startswith("pool-")
    assert counts["duplicate_responses"] == 1 and counts["instructions_below_min_responses"] == 2
    assert counts["rows_read"] == 6 and counts["dropped_empty_response"] == 1
    assert dropped == [{"where": f"{jl}:5", "reason": "empty_response", "id": None}]
    for row in train:
        check_row("train", None, row, TRAIN)


def test_chat_rows_follow_the_multi_turn_rule(tmp_path):
    conv = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey."}]},
        {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Yo."}]},
        {"messages": [{"role": "user", "content": "Hi"}]},  # no answer: dropped and listed
    ]  # fmt: skip
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in conv))
    params = {
        "seed": 0,
        "data": {"kind": "generic", "min_responses": 1, "path": str(path), "fields": {"messages": "messages"}},
    }
    counts = data.run(params, str(tmp_path / "t.jsonl"), str(tmp_path / "e.jsonl"), str(tmp_path / "d.jsonl"))
    train = {r["instruction"]: r for r in read_jsonl(tmp_path / "t.jsonl")}
    assert [x["response"] for x in train["Hi"]["responses"]] == ["Hello!", "Hey."] and "context" not in train["Hi"]
    sys_row = train["System: Be terse.\n\nUser: Hi"]
    assert sys_row["context"][0] == {"role": "system", "content": "Be terse."}
    assert counts["dropped_no_assistant_answer"] == 1 and counts["instructions"] == 2 and counts["pairs"] == 3


def test_a_missing_mapped_field_names_the_dataset_and_field(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps({"question": "x", "output": "y"}) + "\n")
    with pytest.raises(DataError, match=r"pool.jsonl:1: field 'prompt': missing in dataset .*pool.jsonl \[train\]"):
        _run(tmp_path, path)
    assert not (tmp_path / "out" / "train.jsonl").exists()
    assert not list((tmp_path / "out").glob(".grape-group-*"))  # no temporary partitions left behind


def test_jsonl_kind_accepts_several_responses(tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text(
        json.dumps({"id": "q", "instruction": "1+1?", "responses": ["2", {"response": "two", "source": "m"}]}) + "\n"
    )
    test.write_text(json.dumps({"id": "t", "instruction": "2+2?", "answer": 4}) + "\n")
    params = {"seed": 0, "data": {"kind": "jsonl", "train_path": str(train), "test_path": str(test)}}
    data.run(params, str(tmp_path / "o.jsonl"), str(tmp_path / "e.jsonl"))
    (row,) = read_jsonl(tmp_path / "o.jsonl")
    assert row["responses"] == [{"response": "2", "source": "original"}, {"response": "two", "source": "m"}]


def test_instructions_that_differ_only_in_spacing_group_and_lookalikes_do_not(tmp_path):
    """Grouping screens by the text without whitespace, then compares normalised texts: "a b" and "ab" differ."""
    rows = [
        {"prompt": "Add 2 and 3.", "output": "5"},
        {"prompt": "Add 2\tand  3.", "output": "Five."},
        {"prompt": "Add2 and 3.", "output": "5."},  # same signature as the others, a different instruction
        {"prompt": "Add 2 and 3.", "output": "5 "},  # the first response again, up to whitespace
    ]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = {
        "seed": 0,
        "data": {
            "kind": "generic",
            "min_responses": 1,
            "path": str(path),
            "fields": {"instruction": "prompt", "response": "output"},
        },
    }
    counts = data.run(params, str(tmp_path / "t.jsonl"), str(tmp_path / "e.jsonl"))
    train = {r["instruction"]: r for r in read_jsonl(tmp_path / "t.jsonl")}
    assert [x["response"] for x in train["Add 2 and 3."]["responses"]] == ["5", "Five."]
    assert [x["response"] for x in train["Add2 and 3."]["responses"]] == ["5."]
    assert len({r["id"] for r in train.values()}) == 2 and counts["duplicate_responses"] == 1
