"""The tulu3 importer on checked-in fixtures in the hub schemas (tests/fixtures/tulu3, built by make_sft_mixture.py).

The fixtures: an SFT mixture (Parquet, hub layout) and two preference mixes (JSONL, Tulu-style and OLMo-style) whose
prompts overlap: one identical up to whitespace, one multi-turn context, one system-message context, one response
repeated verbatim, one prompt only in the preference data (a chosen reply in each file), and rows to drop.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grape import contracts
from grape.data import run, tulu3
from grape.data.grouping import BELOW_MIN
from grape.data.tally import Tally
from grape.io import DataError, check_row

FIX = Path(__file__).resolve().parent / "fixtures" / "tulu3"
SFT, PREF, OLMO = "tulu-3-sft-mixture", "tulu-3-8b-pref", "olmo-2-7b-pref"
DATASETS = [
    {"name": SFT, "path": str(FIX / "tulu-3-sft-mixture")},
    {"name": PREF, "path": str(FIX / "tulu-3-8b-preference-mixture.jsonl"), "split": "train"},
    {"name": OLMO, "path": str(FIX / "olmo-2-7b-preference-mix.jsonl")},
]


def _load(tmp_path, **extra):
    tally = Tally()
    train, test = tulu3.load({"datasets": DATASETS, "min_responses": 2, "limit": None, **extra}, 0, tally, tmp_path)
    return [r for r in train if not r.get(BELOW_MIN)], test, tally  # the pool's rows (the data stage's filter)


def _by_text(rows, text):
    (row,) = [r for r in rows if text in r["instruction"]]
    return row


def test_rows_follow_the_contract_and_there_is_no_test_split(tmp_path):
    rows, test, _ = _load(tmp_path)
    assert test == []
    for row in rows:
        check_row("train", None, row, contracts.TRAIN)
        for item in row["responses"]:
            check_row("train", None, item, contracts.TRAIN_RESPONSE)
        assert row["id"].startswith("tulu3-") and "answer" not in row and "check" not in row
    assert len({r["id"] for r in rows}) == len(rows)
    assert not list(tmp_path.glob(".grape-group-*")), "the grouper's temporary files are removed"


def test_grouping_across_datasets_by_normalised_context(tmp_path):
    rows, _, _ = _load(tmp_path)
    assert len(rows) == 5
    australia = _by_text(rows, "capital of Australia")
    # The SFT text wins; the preference prompt differs only in whitespace ("of\nAustralia? ").
    assert australia["instruction"] == "What is the capital of Australia?"
    assert [r["source"] for r in australia["responses"]] == [SFT, PREF]
    assert "context" not in australia
    solve = _by_text(rows, "Solve for x")
    assert [r["source"] for r in solve["responses"]] == [SFT, SFT, OLMO]  # two SFT whitespace variants + OLMo
    assert solve["instruction"] == "  Solve for x:\n3x + 5 = 20. "  # the first row's own text, not normalised
    sleep = _by_text(rows, "falling asleep")
    assert [r["source"] for r in sleep["responses"]] == [PREF, OLMO]  # only in preference data, one per file
    assert sleep["responses"][0]["response"].startswith("Keep a fixed wake-up time")


def test_multi_turn_rule(tmp_path):
    rows, _, tally = _load(tmp_path)
    puppy = _by_text(rows, "golden retriever")
    assert puppy["instruction"] == (
        "User: Suggest a name for a golden retriever puppy.\n\n"
        "Assistant: How about Sunny? It suits a golden coat and a cheerful temperament.\n\n"
        "User: Something more literary, please."
    )
    assert [m["role"] for m in puppy["context"]] == ["user", "assistant", "user"]
    # The candidates are the LAST assistant turns, never the earlier one ("How about Sunny?").
    assert [r["response"][:12] for r in puppy["responses"]] == ["Consider Gat", "Try Atticus,"]
    assert [r["source"] for r in puppy["responses"]] == [SFT, PREF]
    hashing = _by_text(rows, "hash table")
    assert hashing["instruction"].startswith("System: You are a concise assistant.")
    assert hashing["instruction"].endswith("\n\nUser: Explain what a hash table is.")
    assert [m["role"] for m in hashing["context"]] == ["system", "user"]
    assert [r["source"] for r in hashing["responses"]] == [SFT, OLMO]
    assert tally.counts["multi_turn"] == 2


def test_identical_responses_count_once_toward_min_responses(tmp_path):
    rows, _, tally = _load(tmp_path)
    # The code prompt has the SFT reply and the same reply again in the 8B mix (trailing newline): one distinct.
    assert not [r for r in rows if "reverses a string" in r["instruction"]]
    assert tally.counts["duplicate_responses"] == 1
    # Below two: code (duplicate), colours, pencils (SFT only), limerick, Macbeth (preference only, once).
    assert tally.counts["instructions_below_min_responses"] == 5
    assert tally.counts["pairs_below_min_responses"] == 5
    rows1, _, _ = _load(tmp_path, min_responses=1)
    assert len(rows1) == 10
    code = _by_text(rows1, "reverses a string")
    assert [r["source"] for r in code["responses"]] == [SFT]  # the SFT copy is the one kept


def test_counts_drops_and_info(tmp_path):
    rows, _, tally = _load(tmp_path)
    c = tally.counts
    assert (c[f"rows_read:{SFT}"], c[f"rows_read:{PREF}"], c[f"rows_read:{OLMO}"]) == (11, 7, 3)
    assert (c[f"pairs:{SFT}"], c[f"pairs:{PREF}"], c[f"pairs:{OLMO}"]) == (5, 3, 3)
    assert sum(len(r["responses"]) for r in rows) == 11
    assert c["prompt_mismatch"] == 1  # the Macbeth row's `prompt` names Hamlet: its context is used
    assert any("Macbeth" in r["instruction"] for r in _load(tmp_path, min_responses=1)[0])
    dropped = {(Path(d["where"].split(" row ")[0].split(":")[0]).name, d["reason"], d["id"]) for d in tally.dropped}
    assert dropped == {
        ("train-00000-of-00001.parquet", "no_assistant_answer", "flan_v2_converted_3"),
        ("train-00000-of-00001.parquet", "empty_response", "no_robots_converted_6"),
        ("train-00000-of-00001.parquet", "empty_instruction", "oasst1_converted_7"),
        ("tulu-3-8b-preference-mixture.jsonl", "empty_response", "allenai/tulu-3-if-augmented-on-policy-8b_6"),
    }
    assert (c["dropped_no_assistant_answer"], c["dropped_empty_response"], c["dropped_empty_instruction"]) == (1, 2, 1)
    lic = tally.info["licences"]
    assert lic["ai2-adapt-dev/no_robots_converted"] == "CC-BY-NC-4.0 (non-commercial)"
    assert lic["ai2-adapt-dev/oasst1_converted"] == "Apache-2.0"
    assert lic["ai2-adapt-dev/tulu_v3.9_open_math_2_gsm8k_50k"] == "see dataset card"
    assert lic[PREF] == lic[OLMO] == tulu3.PREFERENCE_LICENCE
    assert "ai2-adapt-dev/coconot_converted" not in lic  # only subsets actually seen
    assert [(x["name"], x["rows"]) for x in tally.info["datasets"]] == [(SFT, 11), (PREF, 7), (OLMO, 3)]


def test_limit_reads_the_first_rows_of_each_dataset(tmp_path):
    rows, _, tally = _load(tmp_path, limit=2)
    assert [tally.counts[f"rows_read:{n}"] for n in (SFT, PREF, OLMO)] == [2, 2, 2]
    assert sorted(r["instruction"][:20] for r in rows) == ["User: Suggest a name", "What is the capital "]


def test_deterministic(tmp_path):
    a, _, ta = _load(tmp_path)
    b, _, tb = _load(tmp_path)
    assert a == b and ta.counts == tb.counts and ta.dropped == tb.dropped


def test_dataset_without_tulu_fields_is_refused(tmp_path):
    bad = tmp_path / "sharegpt.jsonl"
    bad.write_text(json.dumps({"id": "x", "conversations": [{"from": "human", "value": "hi"}]}) + "\n")
    datasets = [DATASETS[0], {"name": "sharegpt", "path": str(bad), "split": "train"}]
    train, _ = tulu3.load({"datasets": datasets, "min_responses": 2, "limit": None}, 0, Tally(), tmp_path)
    with pytest.raises(DataError, match=r"sharegpt\.jsonl:1: field 'messages'.*'sharegpt'.*\[train\].*`chosen`"):
        list(train)
    assert not list(tmp_path.glob(".grape-group-*"))


def test_through_the_data_stage(tmp_path):
    train_out, test_out, dropped_out = (str(tmp_path / f) for f in ("train.jsonl", "test.jsonl", "dropped.jsonl"))
    data = {"kind": "tulu3", "datasets": DATASETS, "min_responses": 2, "limit": None}
    counts = run({"data": data, "seed": 0}, train_out, test_out, dropped_out)
    assert counts["train"] == counts["instructions"] == 5 and counts["pairs"] == 11 and counts["test"] == 0
    assert counts["info"]["licences"]["ai2-adapt-dev/no_robots_converted"].startswith("CC-BY-NC-4.0")
    rows = [json.loads(line) for line in Path(train_out).read_text().splitlines()]
    assert rows == _load(tmp_path)[0]
    assert len(Path(dropped_out).read_text().splitlines()) == 4
    assert Path(test_out).read_text() == ""


def test_the_instructions_below_the_minimum_feed_the_arms_trained_on_every_pair(tmp_path):
    """Table 2's rows on the fixture, whose counts we know: the pool (>= 2 distinct responses) has 5 instructions and
    11 pairs, 5 of them the SFT mixture's; below the minimum are 5 instructions with one pair each, 3 of them the SFT
    mixture's (code, colours, pencils) and 2 only in preference data (limerick, Macbeth). So SFT-only (`original`)
    trains on 5, Tulu3-SFT (`sft_full`) on 5 + 3 = 8, All Responses (`all`) on 11, All Available (`all_available`)
    on 11 + 5 = 16; every instruction of the pool keeps its place and nothing is counted twice."""
    from grape import config as gconfig
    from grape import select, verify

    cfg = gconfig.compose("tulu3", ["select.arms=[grape,original,sft_full,all,all_available]"])
    data = {**cfg["data"], "datasets": DATASETS, "limit": None}
    f = {n: str(tmp_path / n) for n in ("train", "test", "below", "pool", "all_pool", "c1", "c2")}
    run({"data": data, "seed": 0}, f["train"], f["test"])
    below = run({"data": data, "seed": 0}, f["below"], None, below_min=True)
    assert below["train"] == below["instructions"] == 5 and below["pairs"] == 5
    assert below["instructions_below_min_responses"] == 5
    below_rows = [json.loads(x) for x in Path(f["below"]).read_text().splitlines()]
    assert all(len(r["responses"]) == 1 and BELOW_MIN not in r for r in below_rows)
    assert not {r["id"] for r in below_rows} & {json.loads(x)["id"] for x in Path(f["train"]).read_text().splitlines()}
    v = gconfig.stage_params(cfg, "verify")
    assert verify.run(v, f["train"], [], f["pool"], f["c1"])["pool"] == 11
    assert verify.run(v, f["below"], [], f["all_pool"], f["c2"], extend=f["pool"])["pool"] == 5
    assert len(Path(f["all_pool"]).read_text().splitlines()) == 16
    got = {}
    for arm, pool in (("original", "pool"), ("sft_full", "all_pool"), ("all", "pool"), ("all_available", "all_pool")):
        p = gconfig.stage_params(cfg, "select", target="llama31_8b", arm=arm)
        out = tmp_path / f"{arm}.jsonl"
        got[arm] = select.run(p, f[pool], None, str(out))["examples"]
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert len({r["candidate_id"] for r in rows}) == len(rows) == got[arm]
        if arm in ("original", "sft_full"):
            assert {r["source"] for r in rows} == {SFT}
    assert got == {"original": 5, "sft_full": 8, "all": 11, "all_available": 16}
    empty = run({"data": {**data, "min_responses": 1}, "seed": 0}, f["below"], None, below_min=True)
    assert empty["train"] == 0 and Path(f["below"]).read_text() == ""  # none below: an empty file, not an error
