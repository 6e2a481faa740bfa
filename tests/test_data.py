"""The demo task generator: seeded, disjoint splits, references that verify as correct."""

from __future__ import annotations

import json

import pytest

from grape.answers import extract_answer, is_correct
from grape.data.jsonl import load_user_splits
from grape.io import DataError
from grape.word_problems import demo_splits


def test_demo_splits_are_deterministic_and_disjoint():
    a = demo_splits(40, 30, 2, seed=0)
    assert a == demo_splits(40, 30, 2, seed=0)
    assert a != demo_splits(40, 30, 2, seed=1)
    train, test = a
    assert len(train) == 40 and len(test) == 30
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in test}
    assert len({r["id"] for r in train + test}) == 70


def test_references_are_correct_and_answers_are_integers():
    train, test = demo_splits(200, 50, 2, seed=3)
    for row in train:
        assert is_correct(row["response"], row["answer"]), row
        assert row["response"].rstrip().endswith(f"The answer is {row['answer']}.")
    assert all(extract_answer(r["answer"]) == r["answer"] for r in test)


def test_one_step_problems_are_short():
    train, _ = demo_splits(50, 0, 1, seed=0)
    assert max(len(r["instruction"].split()) for r in train) < 40


def test_user_jsonl_splits_are_validated(tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text(json.dumps({"id": "q1", "instruction": "1+1?", "response": "2", "answer": 2}) + "\n")
    test.write_text(
        json.dumps({"id": "t1", "instruction": "2+2?", "answer": "4"})
        + "\n"
        + json.dumps({"id": "t2", "answer": "5"})
        + "\n"
    )
    with pytest.raises(DataError, match=r"test.jsonl:2.*'instruction'"):
        load_user_splits(str(train), str(test))
    test.write_text(json.dumps({"id": "t1", "instruction": "2+2?", "answer": "4"}) + "\n")
    tr, te = load_user_splits(str(train), str(test))
    assert tr[0]["answer"] == "2" and te[0]["answer"] == "4"


def test_sample_stage_refuses_empty_train_before_loading_a_model(tmp_path):
    from grape import sample

    empty = tmp_path / "train.jsonl"
    empty.write_text("")
    params = {
        "source": "s",
        "seed": 0,
        "threads": 1,
        "prompt_format": "plain",
        "template": {},
        "sample": {
            "backend": "hf",
            "n": 1,
            "temperature": 1.0,
            "top_p": 1.0,
            "max_new_tokens": 4,
            "batch_size": 1,
            "stop": [],
        },
    }
    with pytest.raises(DataError, match=r"train.jsonl: no rows: expected the train instructions"):
        sample.run(params, str(tmp_path / "no-model"), str(empty), str(tmp_path / "c.jsonl"))
    assert not (tmp_path / "c.jsonl").exists()


def test_user_data_with_no_rows_is_an_error(tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("")
    test.write_text(json.dumps({"id": "t1", "instruction": "2+2?", "answer": "4"}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl: no rows"):
        load_user_splits(str(train), str(test))
