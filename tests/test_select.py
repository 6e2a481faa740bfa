"""Selection arms: GRAPE's argmax, ties, seeded random, strongest and 3x by the paper's definitions, the output form."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from helpers import choose

from grape import select
from grape.io import DataError, read_jsonl


def _pool():
    rows = []
    for i in range(4):
        rows.append({"candidate_id": f"q{i}:original:0", "instruction_id": f"q{i}", "source": "original"})
        for src in ("a", "b"):
            for k in range(2):
                if src == "b" and i == 3:
                    continue  # q3 has no candidate from b: `strongest` is short of one there
                rows.append({"candidate_id": f"q{i}:{src}:{k}", "instruction_id": f"q{i}", "source": src})
    for r in rows:
        r.update(
            instruction=f"Q{r['instruction_id']}?",
            response=f"resp {r['candidate_id']}",
            sample_index=0,
            answer="1",
            correct=True,
        )
    return rows


def _groups(rows):
    groups = {}
    for r in rows:
        groups.setdefault(r["instruction_id"], []).append(r)
    return groups


SCORES = {
    "q0:original:0": -3.0,
    "q0:a:0": -1.0,
    "q0:a:1": -2.0,
    "q0:b:0": -0.5,
    "q0:b:1": -4.0,
    "q1:original:0": -1.0,
    "q1:a:0": -1.0,
    "q1:a:1": -2.0,
    "q1:b:0": -1.0,
    "q1:b:1": -9.0,
    "q2:original:0": -0.1,
    "q2:a:0": -2.0,
    "q2:a:1": -2.0,
    "q2:b:0": -3.0,
    "q2:b:1": -3.0,
    "q3:original:0": -5.0,
    "q3:a:0": -4.0,
    "q3:a:1": -6.0,
}


def test_grape_picks_argmax_with_deterministic_ties():
    picked, counts = choose("grape", _groups(_pool()), SCORES, k=1, seed=0, strongest=None)
    assert [p["candidate_id"] for p in picked] == ["q0:b:0", "q1:a:0", "q2:original:0", "q3:a:0"]
    assert counts == {}  # q1: a three-way tie at -1.0, broken by the smallest candidate id


def test_reverse_picks_argmin_and_k():
    picked, _ = choose("reverse", _groups(_pool()), SCORES, k=1, seed=0, strongest=None)
    assert [p["candidate_id"] for p in picked] == ["q0:b:1", "q1:b:1", "q2:b:0", "q3:a:1"]
    picked, _ = choose("grape", _groups(_pool()), SCORES, k=2, seed=0, strongest=None)
    assert len(picked) == 8


def test_order_of_the_pool_does_not_matter():
    rows = _pool()
    a, _ = choose("grape", _groups(rows), SCORES, 1, 0, None)
    b, _ = choose("grape", _groups(rows[::-1]), SCORES, 1, 0, None)
    r1, _ = choose("random", _groups(rows), SCORES, 1, 7, None)
    r2, _ = choose("random", _groups(rows[::-1]), SCORES, 1, 7, None)
    assert a == b and r1 == r2


def test_random_is_seeded_and_varies_with_seed():
    picks = {
        seed: tuple(p["candidate_id"] for p in choose("random", _groups(_pool()), {}, 1, seed, None)[0])
        for seed in range(12)
    }
    assert len(set(picks.values())) > 1
    assert picks[3] == tuple(p["candidate_id"] for p in choose("random", _groups(_pool()), {}, 1, 3, None)[0])


def test_strongest_all_original_and_missing_scores():
    g = _groups(_pool())
    strongest, counts = choose("strongest", g, {}, 1, 0, strongest="b")
    # only b's responses, as many per instruction as the original has (1); q3 has none of b's: counted
    assert [p["candidate_id"] for p in strongest] == ["q0:b:0", "q1:b:0", "q2:b:0"]
    assert counts == {"strongest_shortfall": 1, "instructions_short_of_strongest": 1}
    assert len(choose("all", g, {}, 1, 0, None)[0]) == len(_pool())
    assert [p["source"] for p in choose("original", g, {}, 1, 0, None)[0]] == ["original"] * 4
    partial = {k: v for k, v in SCORES.items() if not k.startswith("q3")}
    picked, counts = choose("grape", g, partial, 1, 0, None)
    assert len(picked) == 3 and counts == {"unscored_candidates": 3, "instructions_without_scores": 1}


def test_three_x_keeps_three_times_the_originals_drawn_seeded_and_counts_a_shortfall():
    rows = _pool()  # q0-q2: 1 original + 4 sampled; q3: 1 original + 2 sampled
    rows.append({**rows[0], "candidate_id": "q0:original:1"})  # q0 has 2 originals: wants 6 of its 6
    rows.append({**rows[5], "candidate_id": "q1:original:1", "instruction_id": "q1", "source": "original"})
    g = _groups(rows)  # q1 now has 2 originals and 6 candidates: wants 6, all
    picked, counts = choose("3x", g, {}, 1, 7, None)
    per = Counter(p["instruction_id"] for p in picked)
    assert per == {"q0": 6, "q1": 6, "q2": 3, "q3": 3}
    assert counts == {} and len({p["candidate_id"] for p in picked}) == len(picked)
    again, _ = choose("3x", _groups(rows[::-1]), {}, 1, 7, None)
    assert sorted(p["candidate_id"] for p in again) == sorted(p["candidate_id"] for p in picked)  # seeded
    other = {p["candidate_id"] for p in choose("3x", g, {}, 1, 8, None)[0]}
    assert other != {p["candidate_id"] for p in picked}  # another seed draws another q2 subset (3 of 5)
    rows.append({**rows[0], "candidate_id": "q3:original:1", "instruction_id": "q3"})
    _, short = choose("3x", _groups(rows), {}, 1, 7, None)  # q3: 2 originals want 6, it has 4
    assert short == {"3x_shortfall": 2, "instructions_short_of_3x": 1}


GRAPE_PARAMS = {
    "seed": 0,
    "arm": "grape",
    "target": "t",
    "template": {},
    "select": {"k": 1, "strongest_source": "b", "original_sources": ["original"], "exclude_self": True},
}


def test_run_writes_prompt_completion_rows(tmp_path):
    pool, scores = tmp_path / "pool.jsonl", tmp_path / "scores.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in _pool()))
    scores.write_text(
        "".join(
            json.dumps(
                {
                    "candidate_id": c,
                    "instruction_id": c.split(":")[0],
                    "source": c.split(":")[1],
                    "n_tokens": 3,
                    "sum_logprob": 3 * s,
                    "mean_logprob": s,
                    "truncated": False,
                }
            )
            + "\n"
            for c, s in SCORES.items()
        )
    )
    params = GRAPE_PARAMS
    out = tmp_path / "grape.jsonl"
    select.run(params, str(pool), str(scores), str(out))
    rows = read_jsonl(out)
    assert rows[0]["prompt"] == "Question: Qq0?\nAnswer:" and rows[0]["completion"] == " resp q0:b:0"
    assert rows[0]["prompt"] + rows[0]["completion"] == "Question: Qq0?\nAnswer: resp q0:b:0"
    with pytest.raises(ValueError, match="scores"):
        select.run(params, str(pool), None, str(tmp_path / "x.jsonl"))


def test_a_target_never_selects_its_own_samples_and_the_self_arm_only_those(tmp_path):
    pool, scores = tmp_path / "pool.jsonl", tmp_path / "scores.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in _pool()))
    scores.write_text("".join(json.dumps({"candidate_id": c, "instruction_id": c.split(":")[0], "source": c.split(":")[1],
                                          "n_tokens": 3, "sum_logprob": 3 * s, "mean_logprob": s, "truncated": False}) + "\n"
                              for c, s in SCORES.items()))  # fmt: skip
    picked = {}
    for arm, exclude in (("grape", True), ("grape", False), ("self", True)):
        params = {
            **GRAPE_PARAMS,
            "arm": arm,
            "target": "b",
            "select": {**GRAPE_PARAMS["select"], "exclude_self": exclude},
        }
        counts = select.run(params, str(pool), str(scores), str(tmp_path / f"{arm}{exclude}.jsonl"))
        picked[(arm, exclude)] = (
            {r["instruction_id"]: r["source"] for r in read_jsonl(tmp_path / f"{arm}{exclude}.jsonl")},
            counts,
        )
    rows, counts = picked[("grape", True)]
    assert "b" not in rows.values() and rows["q0"] == "a"  # b:0 scores highest on q0, but b is the target
    assert counts["own_samples_excluded"] == 6 and counts["instructions_left_without_candidates"] == 0
    assert picked[("grape", False)][0]["q0"] == "b"  # the paper's plain setting: the target's own samples compete
    rows, counts = picked[("self", True)]
    assert set(rows.values()) == {"b"} and sorted(rows) == ["q0", "q1", "q2"]
    assert counts["instructions_left_without_candidates"] == 1  # q3: b has no sample there, counted


def test_empty_inputs_and_empty_selections_stop_with_the_file_named(tmp_path):
    pool, scores, empty = tmp_path / "pool.jsonl", tmp_path / "scores.jsonl", tmp_path / "empty.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in _pool()))
    empty.write_text("")
    params = GRAPE_PARAMS
    with pytest.raises(DataError, match=r"empty.jsonl: no rows: expected the candidate pool"):
        select.run(params, str(empty), str(scores), str(tmp_path / "x.jsonl"))
    # every candidate skipped by scoring: the grape arm would train on nothing
    with pytest.raises(DataError, match=r"pool.jsonl: arm 'grape' selected 0 examples .*empty.jsonl"):
        select.run(params, str(pool), str(empty), str(tmp_path / "x.jsonl"))
    assert not (tmp_path / "x.jsonl").exists()
