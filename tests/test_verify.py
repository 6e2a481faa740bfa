"""The correctness filter: answer extraction and per-source counts of everything dropped."""

from __future__ import annotations

import json

import pytest

from grape import verify
from grape.io import DataError, read_json, read_jsonl


@pytest.mark.parametrize(
    "text, answer",
    [
        ("3 + 4 = 7. The answer is 7.", "7"),
        ("The answer is: 1,200", "1200"),
        ("He has 5 left, so 5 - 2 = 3", "3"),
        ("the answer is 12 and then 99 more words 4", "12"),
        ("-4", "-4"),
        ("2.50 dollars", "2.5"),
        ("no number here", None),
    ],
)
def test_extract_answer(text, answer):
    assert verify.extract_answer(text) == answer


def _train(tmp_path):
    rows = [
        {
            "id": f"q{i}",
            "instruction": f"What is {i} + 1?",
            "responses": [{"response": f"{i} + 1 = {i + 1}. The answer is {i + 1}.", "source": "original"}],
            "answer": str(i + 1),
        }
        for i in range(3)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cands(tmp_path, source, responses):
    path = tmp_path / f"{source}.jsonl"
    rows = [
        {
            "candidate_id": f"q{i}:{source}:{k}",
            "instruction_id": f"q{i}",
            "instruction": f"What is {i} + 1?",
            "response": resp,
            "source": source,
            "sample_index": k,
            "answer": str(i + 1),
        }
        for (i, k), resp in responses.items()
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("drop", [True, False])
def test_filter_counts_every_candidate(tmp_path, drop):
    a = _cands(tmp_path, "a", {(0, 0): "It is 1.", (0, 1): "It is 5.", (1, 0): "", (2, 0): "no idea"})
    b = _cands(tmp_path, "b", {(0, 0): "The answer is 1.", (2, 0): "3", (2, 1): "3 apples"})
    out, counts = tmp_path / "pool.jsonl", tmp_path / "counts.json"
    verify.run(
        {"verify": {"drop_incorrect": drop, "unverifiable": "error"}, "sources": ["a", "b"]},
        str(_train(tmp_path)),
        [str(a), str(b)],
        str(out),
        str(counts),
    )
    pool = read_jsonl(out)
    table = {r["source"]: r for r in read_json(counts)}
    assert table["a"]["generated"] == 4 and table["a"]["dropped_empty"] == 1 and table["a"]["correct"] == 1
    if drop:
        assert table["a"]["dropped_wrong"] == 1 and table["a"]["dropped_no_answer"] == 1 and table["a"]["kept"] == 1
        assert all(r["correct"] for r in pool)
    else:
        assert table["a"]["kept"] == 3
    assert table["b"]["kept"] == 3 and table["original"]["kept"] == 3
    for row in table.values():  # nothing disappears without a count
        assert row["generated"] == row["kept"] + row["dropped_empty"] + row["dropped_no_answer"] + row["dropped_wrong"]
    assert len(pool) == sum(r["kept"] for r in table.values())
    assert {r["instruction_id"] for r in pool if r["source"] == "original"} == {"q0", "q1", "q2"}


def test_unknown_instruction_is_an_error(tmp_path):
    a = _cands(tmp_path, "a", {(7, 0): "8"})
    with pytest.raises(ValueError, match="q7"):
        verify.run(
            {"verify": {"drop_incorrect": True, "unverifiable": "error"}, "sources": ["a"]},
            str(_train(tmp_path)),
            [str(a)],
            str(tmp_path / "p.jsonl"),
            str(tmp_path / "c.json"),
        )
    assert not (tmp_path / "p.jsonl").exists()


def test_empty_candidates_file_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "a.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=r"a.jsonl: no rows: expected the sample stage's candidates"):
        verify.run(
            {"verify": {"drop_incorrect": True, "unverifiable": "error"}, "sources": ["a"]},
            str(_train(tmp_path)),
            [str(empty)],
            str(tmp_path / "pool.jsonl"),
            str(tmp_path / "counts.json"),
        )
    assert not (tmp_path / "pool.jsonl").exists()


def test_a_source_with_nothing_correct_is_counted_not_an_error(tmp_path):
    a = _cands(tmp_path, "a", {(0, 0): "It is 7.", (1, 0): "no idea"})
    verify.run(
        {"verify": {"drop_incorrect": True, "unverifiable": "error"}, "sources": ["a"]},
        str(_train(tmp_path)),
        [str(a)],
        str(tmp_path / "pool.jsonl"),
        str(tmp_path / "counts.json"),
    )
    table = {r["source"]: r for r in read_json(tmp_path / "counts.json")}
    assert table["a"]["generated"] == 2 and table["a"]["kept"] == 0
    assert table["a"]["dropped_wrong"] == 1 and table["a"]["dropped_no_answer"] == 1


def test_answers_are_optional_unless_the_filter_needs_them(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(
        json.dumps({"id": "q0", "instruction": "Say hi.", "responses": [{"response": "Hi!", "source": "original"}]})
        + "\n"
    )
    cands = tmp_path / "a.jsonl"
    cands.write_text(
        json.dumps(
            {
                "candidate_id": "q0:a:0",
                "instruction_id": "q0",
                "instruction": "Say hi.",
                "response": "Hello.",
                "source": "a",
                "sample_index": 0,
            }
        )
        + "\n"
    )
    with pytest.raises(DataError, match=r"train.jsonl:1: field 'answer': missing \(verify.drop_incorrect"):
        verify.run(
            {"verify": {"drop_incorrect": True, "unverifiable": "error"}, "sources": ["a"]},
            str(train),
            [str(cands)],
            str(tmp_path / "pool.jsonl"),
            str(tmp_path / "counts.json"),
        )
    verify.run(
        {"verify": {"drop_incorrect": False, "unverifiable": "error"}, "sources": ["a"]},
        str(train),
        [str(cands)],
        str(tmp_path / "pool.jsonl"),
        str(tmp_path / "counts.json"),
    )
    pool = read_jsonl(tmp_path / "pool.jsonl")
    assert [(r["source"], r["correct"]) for r in pool] == [("original", None), ("a", None)]
    assert all("answer" not in r for r in pool)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("mode", ["keep", "drop", "error"])
def test_unverifiable_candidates_follow_the_config_and_are_counted(tmp_path, mode):
    """UltraInteract's code tasks have no reference answer: their candidates are kept or dropped, counted either way."""
    train = _write(
        tmp_path / "train.jsonl",
        [
            {
                "id": "m",
                "instruction": "2+2?",
                "responses": [{"response": "Answer:\n\\boxed{4}", "source": "original"}],
                "answer": "4",
                "check": "boxed",
                "task": "Math_CoT",
            },
            {
                "id": "c",
                "instruction": "Write f.",
                "responses": [{"response": "def f(): pass", "source": "original"}],
                "check": "none",
                "task": "Coding",
            },
        ],
    )
    cands = _write(
        tmp_path / "a.jsonl",
        [
            {
                "candidate_id": f"{i}:a:0",
                "instruction_id": i,
                "instruction": "x",
                "response": r,
                "source": "a",
                "sample_index": 0,
            }
            for i, r in (("m", "so \\boxed{ 4 }."), ("c", "def f(): return 1"))
        ],
    )
    args = (str(train), [str(cands)], str(tmp_path / "pool.jsonl"), str(tmp_path / "counts.json"))
    params = {"verify": {"drop_incorrect": True, "unverifiable": mode}, "sources": ["a"]}
    if mode == "error":
        with pytest.raises(DataError, match=r"train.jsonl:2: field 'answer'.*verify.unverifiable"):
            verify.run(params, *args)
        return
    verify.run(params, *args)
    table = {r["source"]: r for r in read_json(tmp_path / "counts.json")}
    pool = {r["candidate_id"]: r for r in read_jsonl(tmp_path / "pool.jsonl")}
    assert pool["m:a:0"]["correct"] is True and pool["m:a:0"]["task"] == "Math_CoT"
    assert table["original"]["correct"] == 1 and table["original"]["kept"] == 2
    if mode == "keep":
        assert pool["c:a:0"]["correct"] is None and table["a"]["unverified_kept"] == 1 and table["a"]["kept"] == 2
    else:
        assert "c:a:0" not in pool and table["a"]["dropped_unverifiable"] == 1 and table["a"]["kept"] == 1


def test_several_dataset_responses_per_instruction_keep_their_sources(tmp_path):
    train = _write(
        tmp_path / "train.jsonl",
        [
            {
                "id": "t",
                "instruction": "Hi",
                "context": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "responses": [
                    {"response": "Hello.", "source": "sft"},
                    {"response": "Hey.", "source": "pref"},
                    {"response": "Hi there.", "source": "pref"},
                ],
            }
        ],
    )
    verify.run(
        {"verify": {"drop_incorrect": False, "unverifiable": "error"}, "sources": []},
        str(train),
        [],
        str(tmp_path / "pool.jsonl"),
        str(tmp_path / "counts.json"),
    )
    pool = read_jsonl(tmp_path / "pool.jsonl")
    assert [r["candidate_id"] for r in pool] == ["t:sft:0", "t:pref:0", "t:pref:1"]
    assert all(r["context"][0]["role"] == "system" and r["correct"] is None for r in pool)
    assert {r["source"]: r["kept"] for r in read_json(tmp_path / "counts.json")} == {"sft": 1, "pref": 2}
