"""The reward arm (the paper's App. B.1): a tiny random reward model (a sequence-classification head, built by the
suite's own model stage) scores every pool candidate; the arm keeps each instruction's highest reward."""

from __future__ import annotations

import json

import yaml
from helpers import REPO

from grape import config as gconfig
from grape import models, reward, select
from grape.io import read_jsonl


def _pool(path):
    rows = []
    for i in range(3):
        for k, src in enumerate(("original", "a", "b")):
            rows.append({"candidate_id": f"q{i}:{src}:{k}", "instruction_id": f"q{i}", "instruction": f"What is {i}?",
                         "response": f"It is {i + k}." * (k + 1), "source": src, "sample_index": k, "correct": None})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_reward_model_scores_the_pool_and_the_reward_arm_keeps_the_best(tmp_path):
    cfg_model = yaml.safe_load((REPO / "config/model/tiny_random.yaml").read_text())
    rm = tmp_path / "rm"
    manifest = models.materialise("rm", {**cfg_model, "head": "reward"}, rm)
    assert manifest["head"] == "reward"
    assert "ForSequenceClassification" in json.loads((rm / "config.json").read_text())["architectures"][0]
    cfg = gconfig.compose("tiny", ["+model@models.rm=tiny_random", "+models.rm.head=reward", "select.reward_model=rm",
                                   "select.arms=[grape,reward]", "reward.batch_size=4"])  # fmt: skip
    pool = _pool(tmp_path / "pool.jsonl")
    out = tmp_path / "rewards.jsonl"
    counts = reward.run({**gconfig.stage_params(cfg, "reward"), "threads": 1}, str(rm), str(pool), str(out))
    rows = read_jsonl(out)
    assert counts["candidates"] == len(rows) == 9 and [r["candidate_id"] for r in rows] == sorted(
        r["candidate_id"] for r in rows
    )
    again = tmp_path / "again.jsonl"  # another batch size: the same rewards (batches are by length, rows are not)
    reward.run({**gconfig.stage_params(cfg, "reward"), "threads": 1, "reward": {"batch_size": 1, "max_length": 1024}},
               str(rm), str(pool), str(again))  # fmt: skip
    assert [round(r["reward"], 4) for r in read_jsonl(again)] == [round(r["reward"], 4) for r in rows]
    params = gconfig.stage_params(cfg, "select", target="tiny_a", arm="reward")
    assert params["select"]["reward_model"] == "rm"
    sel = tmp_path / "sel.jsonl"
    select.run(params, str(pool), str(out), str(sel))
    best = {}
    for r in rows:
        if r["instruction_id"] not in best or r["reward"] > best[r["instruction_id"]]["reward"]:
            best[r["instruction_id"]] = r
    assert sorted(r["candidate_id"] for r in read_jsonl(sel)) == sorted(r["candidate_id"] for r in best.values())
