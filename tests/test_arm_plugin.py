"""Extending a finished run: an arm plugin (one module, no file of the suite touched), multi-round GRAPE (a
fine-tuned model scores: models referenced by what they are) and the reward arm each run only their own jobs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys

import pytest
from helpers import snakemake

pytestmark = pytest.mark.slow

TOY = '''"""by_source: per instruction, one candidate of the alphabetically first source (the last with
select.options.by_source.last)."""

from grape.arms import Choice

NAME = "by_source"
SCORES = False
READS = ("exclude_self",)
OPTIONS = {"properties": {"last": {"type": "boolean"}}}


def choose(c: Choice) -> list[dict]:
    ordered = sorted(c.cands, key=lambda x: (x["source"], x["candidate_id"]))
    return [ordered[-1] if c.settings["options"].get("last") else ordered[0]]
'''


def test_a_plugin_arm_grape_rounds_and_the_reward_arm_join_a_finished_run_alone(tiny_run, tmp_path, monkeypatch):
    """On a finished `tiny` run, one config change adds three things, and only their own jobs run:
    - a toy arm installed as a plugin (entry point group `grape.arms`), with its own option, no file of the suite
      touched: its selection, fine-tune and evaluation;
    - `grape_rounds: 2` (the paper's App. G): the pool scored by round 1's GRAPE model, GRAPE picking again from
      those scores, the base target fine-tuned on the new pick and evaluated;
    - the `reward` arm (App. B.1): a tiny random reward model built, scoring the pool, its best-rewarded picks
      trained and evaluated;
    then the report, with every arm and the picks each GRAPE round changed."""
    workdir, _ = tiny_run
    work = tmp_path / "run"
    shutil.copytree(workdir, work, symlinks=True)  # the finished run (outputs and snakemake's records)
    site = tmp_path / "site"
    (site / "toy_arm-0.1.dist-info").mkdir(parents=True)
    (site / "toy_arm.py").write_text(TOY)
    (site / "toy_arm-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-arm\nVersion: 0.1\n")
    (site / "toy_arm-0.1.dist-info" / "entry_points.txt").write_text("[grape.arms]\nby_source = toy_arm\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    change = ("select.arms=[grape,reverse,random,strongest,all,original,by_source,reward] "
              "+select.options.by_source.last=true grape_rounds=2 +model@models.rm=tiny_random +models.rm.head=reward "
              "select.reward_model=rm")  # fmt: skip
    args = ("--cores", "2", "--config", "experiment=tiny", f"overrides={change}")
    real = snakemake(work, *args)
    assert real.returncode == 0, real.stdout[-2000:] + real.stderr[-4000:]
    said = real.stdout + real.stderr
    stats = dict(re_jobs(said.split("Job stats:")[1].split("total")[0]))  # the jobs it planned, and so ran
    assert stats == {"compose": 1, "model": 1, "reward": 1, "score_shard": 2, "score_gather": 1, "select": 3,
                     "sft": 3, "evaluate": 3, "report": 1}, said[-3000:]  # fmt: skip
    r = work / "results" / "tiny"
    picked = [json.loads(line) for line in (r / "selections/tiny_a/by_source.jsonl").read_text().splitlines()]
    assert len(picked) == 6 and {p["source"] for p in picked} == {"tiny_b"}  # one per instruction, the last source
    shard = json.loads((r / "scores/tiny_a/grape/shard0-of-2.jsonl.meta.json").read_text())
    assert shard["inputs"]["model"]["path"].endswith("sft/tiny_a/grape")  # scored by round 1's GRAPE model
    sel = json.loads((r / "selections/tiny_a/grape.r2.jsonl.meta.json").read_text())
    assert sel["inputs"]["scores"]["path"].endswith("scores/tiny_a/grape.jsonl")
    tuned = json.loads((r / "sft/tiny_a/grape.r2/grape_meta.json").read_text())
    assert tuned["inputs"]["model"]["path"].endswith("models/tiny_a")  # the base target, trained again
    rewarded = json.loads((r / "selections/tiny_a/reward.jsonl.meta.json").read_text())
    assert rewarded["inputs"]["scores"]["path"].endswith("rewards/rm.jsonl") and rewarded["counts"]["examples"] == 6
    table = list(csv.DictReader(open(r / "report/results.csv")))
    assert {"by_source", "grape.r2", "reward"} <= {t["arm"] for t in table}
    html = (r / "report/summary.html").read_text()
    assert "<h2>GRAPE rounds</h2>" in html and "picks_changed" in html
    assert sys.modules.get("toy_arm") is None  # the plugin lived in the workflow's processes only


def re_jobs(text: str):
    import re

    for name, n in re.findall(r"^(\w+)\s+(\d+)$", text, re.M):
        if name not in ("total", "all"):
            yield name, int(n)
