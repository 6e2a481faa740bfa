"""The UltraInteract importer on a small fixture in the dataset's real schema (tests/fixtures/ultrainteract/).

The fixture (20 rows, the same rows as JSON Lines and as the hub's Parquet file) has 10 parent_ids over the four
tasks, rows of a parent scattered through the file, one duplicate response (whitespace differs), one blank response,
one blank instruction, a Math_CoT parent whose originals disagree (`\\frac{1}{2}` twice, `0.5` once), one with no
boxed answer, and a second-turn Math_PoT instruction that embeds the first attempt and its `Out:` observation.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from grape import answers, data
from grape.contracts import TRAIN, TRAIN_RESPONSE
from grape.data import ultrainteract
from grape.data.conversations import normalise
from grape.data.tally import Tally
from grape.io import DataError, check_row

FIXTURES = Path(__file__).parent / "fixtures" / "ultrainteract"
JSONL = FIXTURES / "ultrainteract_sft.jsonl"
PARQUET = FIXTURES / "0000_sft.parquet"
RAW = [json.loads(line) for line in JSONL.read_text().splitlines()]


def parent(word: str) -> str:
    """The parent_id of the fixture group whose instruction contains `word`."""
    (pid,) = {r["parent_id"] for r in RAW if word in r["instruction"]}
    return pid


def load(path, tmp_path, **d) -> tuple[list[dict], Tally]:
    tally = Tally()
    train, test = ultrainteract.load({"path": str(path), **d}, 0, tally, tmp_path / "work")
    assert test == []
    return list(train), tally


@pytest.fixture
def imported(tmp_path):
    rows, tally = load(JSONL, tmp_path)
    return {r["id"]: r for r in rows}, tally


def test_one_instruction_per_parent_id(imported):
    rows, tally = imported
    assert tally.counts["rows_read"] == 20
    usable = [r for r in RAW if r["instruction"].strip() and r["response"].strip()]
    expected = defaultdict(list)
    for r in usable:
        if normalise(r["response"]) not in expected[r["parent_id"]]:
            expected[r["parent_id"]].append(normalise(r["response"]))
    assert len(rows) == len(expected) == 9
    for pid, texts in expected.items():
        row = rows[pid]
        assert [normalise(x["response"]) for x in row["responses"]] == texts  # input order kept
        assert {x["source"] for x in row["responses"]} == {"original"}
        assert row["instruction"] == next(r["instruction"] for r in usable if r["parent_id"] == pid)
        assert row["task"] == next(r["task"] for r in usable if r["parent_id"] == pid)
    sizes = {pid: len(rows[pid]["responses"]) for pid in rows}
    assert sizes[parent("Janet's ducks")] == 2  # 3 rows, one a whitespace-only variant of another
    assert sizes[parent("sum of its elements")] == 3  # 4 rows, one blank
    assert tally.counts["duplicate_responses"] == 1
    assert "Out: 3.7333333333333334" in rows[parent("15 trees")]["instruction"]  # second turn: observation kept
    assert "context" not in rows[parent("15 trees")]
    assert {k: v for k, v in tally.counts.items() if k.startswith("task:")} == {
        "task:Math_CoT": 3,
        "task:Logic": 2,
        "task:Math_PoT": 2,
        "task:Coding": 2,
    }


def test_blank_rows_dropped_and_listed(imported):
    _, tally = imported
    blank_response = next(r for r in RAW if not r["response"].strip())
    blank_instruction = next(r for r in RAW if not r["instruction"].strip())
    assert tally.dropped == [
        {"where": f"{JSONL}:6", "reason": "empty_response", "id": blank_response["id"]},
        {"where": f"{JSONL}:13", "reason": "empty_instruction", "id": blank_instruction["id"]},
    ]
    assert tally.counts["dropped_empty_response"] == tally.counts["dropped_empty_instruction"] == 1
    assert blank_instruction["parent_id"] not in imported[0]


def test_answers_per_task(imported):
    rows, tally = imported
    ducks, half, gcd = rows[parent("Janet's ducks")], rows[parent("fair coin")], rows[parent("84 and 126")]
    assert (ducks["check"], ducks["answer"]) == ("boxed", "18")  # `\boxed{18}` and `\boxed{$18}` agree
    assert (half["check"], half["answer"]) == ("boxed", "\\frac{1}{2}")  # 2 of 3 originals
    assert gcd["check"] == "boxed" and "answer" not in gcd
    assert (rows[parent("chess club")]["check"], rows[parent("chess club")]["answer"]) == ("final_line", "b")
    assert rows[parent("llama")]["answer"] == "false"
    for word in ("15 trees", "pens at", "sum of its elements", "palindrome"):
        assert rows[parent(word)]["check"] == "none" and "answer" not in rows[parent(word)]
    assert tally.counts["answer_disagreement"] == 1
    assert tally.counts["originals_off_reference"] == 1
    assert tally.counts["no_reference_answer:Math_CoT"] == 1
    assert tally.counts["unverifiable:Coding"] == tally.counts["unverifiable:Math_PoT"] == 2
    assert tally.info["answer_rules"] == {
        "Math_CoT": "boxed",
        "Logic": "final_line",
        "Math_PoT": "none",
        "Coding": "none",
    }


def test_originals_pass_their_own_reference(imported):
    """What verify will do with the references: every original agrees with it, except the disagreeing `0.5`."""
    rows, _ = imported
    verifiable = [r for r in rows.values() if "answer" in r]
    assert len(verifiable) == 4
    for row in verifiable:
        for item in row["responses"]:
            expected = "\\boxed{0.5}" not in item["response"]
            assert answers.is_correct(item["response"], row["answer"], row["check"]) is expected


def test_reference_vote_ties_go_to_the_first_seen():
    texts = ["Answer:\n\\boxed{3}", "Answer:\n\\boxed{4}", "no answer here", "Answer:\n\\boxed{4.0}"]
    assert ultrainteract.reference(texts, "boxed") == ("4", 2)
    assert ultrainteract.reference(texts[:2], "boxed") == ("3", 2)
    assert ultrainteract.reference(["Answer:\nC.", "Answer:\n c"], "final_line") == ("c", 1)
    assert ultrainteract.reference(["Step 1: no marker"], "final_line") == (None, 0)


def test_rows_pass_the_train_contract(imported):
    for row in imported[0].values():
        check_row("train", None, row, TRAIN)
        for item in row["responses"]:
            check_row("train", None, item, TRAIN_RESPONSE)


def test_jsonl_parquet_directory_and_json_array_agree(tmp_path):
    """Recent hub revisions ship `0000_sft.parquet`, older ones one JSON array; a snapshot is a directory."""
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    shutil.copy(PARQUET, snapshot / PARQUET.name)
    array = tmp_path / "old" / "ultrainteract_sft.json"
    array.parent.mkdir()
    array.write_text(json.dumps(RAW))
    runs = [load(path, tmp_path) for path in (JSONL, PARQUET, snapshot, array)]
    first_rows, first_tally = runs[0]
    for rows, tally in runs[1:]:
        assert rows == first_rows
        assert tally.counts == first_tally.counts
        assert [(x["reason"], x["id"]) for x in tally.dropped] == [(x["reason"], x["id"]) for x in first_tally.dropped]


def test_deterministic_and_no_temporary_files_left(tmp_path):
    a, _ = load(PARQUET, tmp_path)
    b, _ = load(PARQUET, tmp_path)
    assert a == b
    assert list((tmp_path / "work").iterdir()) == []


def test_limit_reads_only_the_first_rows(tmp_path):
    rows, tally = load(JSONL, tmp_path, limit=5)
    assert tally.counts["rows_read"] == 5
    assert sorted(r["id"] for r in rows) == sorted({r["parent_id"] for r in RAW[:5]})
    assert all(len(r["responses"]) == 1 for r in rows)


def test_missing_field_names_field_and_dataset(tmp_path):
    bad = [dict(r) for r in RAW[:4]]
    del bad[2]["parent_id"]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in bad))
    with pytest.raises(DataError, match=r"parent_id.*missing in dataset .*bad\.jsonl \[train\]") as err:
        load(path, tmp_path)
    assert err.value.line is None and err.value.path == f"{path}:3"
    assert list((tmp_path / "work").iterdir()) == []  # the partition files are removed


def test_instruction_mismatch_keeps_the_first(tmp_path):
    rows = [dict(r) for r in RAW]
    later = [i for i, r in enumerate(rows) if "Janet's ducks" in r["instruction"]][1]
    rows[later]["instruction"] += "\nAnswer in whole dollars."
    path = tmp_path / "mismatch.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, tally = load(path, tmp_path)
    assert tally.counts["instruction_mismatch"] == 1
    ducks = next(r for r in out if r["id"] == parent("Janet's ducks"))
    assert ducks["instruction"] == RAW[0]["instruction"]


def test_through_the_data_stage(tmp_path):
    out = tmp_path / "data"
    params = {
        "data": {"kind": "ultrainteract", "path": str(PARQUET), "revision": None, "split": "train", "limit": None}
    }
    counts = data.run(
        {**params, "seed": 0}, str(out / "train.jsonl"), str(out / "test.jsonl"), str(out / "dropped.jsonl")
    )
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert counts["train"] == counts["instructions"] == len(train) == 9
    assert counts["pairs"] == sum(len(r["responses"]) for r in train) == 20 - 2 - 1  # rows - blank - duplicate
    assert counts["test"] == 0 and (out / "test.jsonl").read_text() == ""
    assert counts["info"]["answer_rules"]["Math_CoT"] == "boxed"
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    assert [d["reason"] for d in dropped] == ["empty_response", "empty_instruction"]
    assert sorted(p.name for p in out.iterdir()) == ["dropped.jsonl", "test.jsonl", "train.jsonl"]
