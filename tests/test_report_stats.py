"""The report's statistics: paired intervals are narrower than independent ones when arms agree on most problems,
the outcome paragraph follows the intervals, and the paper's numbers sit beside ours, labelled."""

from __future__ import annotations

import pandas as pd

from grape import config as gconfig
from grape.report.stats import bootstrap_ci, outcome, paired_ci, paired_table, paper_table


def test_paired_interval_uses_the_pairing():
    ids = [f"p{i}" for i in range(200)]
    a = {k: float(i % 2) for i, k in enumerate(ids)}  # half right
    b = dict(a)
    for k in ids[:20]:
        b[k] = 1.0 - b[k]  # disagrees on 10% of problems
    r = paired_ci(a, b, 1000, 0.95, 0)
    assert r["n"] == 200 and r["lo"] <= r["delta"] <= r["hi"]
    lo_a, hi_a = bootstrap_ci(list(a.values()), 1000, 0.95, 0)
    assert (r["hi"] - r["lo"]) < 0.75 * (hi_a - lo_a)  # sd sqrt(0.1) against 0.5: the shared difficulty cancels
    assert paired_ci(a, {"other": 1.0}, 100, 0.95, 0)["n"] == 0


def test_outcome_follows_the_intervals():
    params = {"arms": ["grape", "original", "random"], "seed": 0, "report": {"bootstrap": 500, "ci": 0.95}}
    ids = [f"p{i}" for i in range(300)]
    per = {("t", "base", "local"): {k: 0.0 for k in ids},
           ("t", "original", "local"): {k: float(i % 4 == 0) for i, k in enumerate(ids)},
           ("t", "grape", "local"): {k: float(i % 2 == 0) for i, k in enumerate(ids)},
           ("t", "random", "local"): {k: float(i % 4 == 0) for i, k in enumerate(ids)}}  # fmt: skip
    table = paired_table(per, params)
    said = outcome(table, 0.95)
    assert said.startswith("grape beat original by +25.0 points")
    assert "resolvably ahead of base (local), original (local), random (local), resolvably behind none" in said
    same = {k: dict(v) for k, v in per.items()}
    same[("t", "grape", "local")] = dict(same[("t", "original", "local")])
    assert "grape and original gave the same result on every problem" in outcome(paired_table(same, params), 0.95)
    same[("t", "grape", "local")].update(p0=0.0, p1=1.0)  # one problem lost, one won
    assert "no difference resolvable at this size" in outcome(paired_table(same, params), 0.95)


def test_the_papers_numbers_beside_ours():
    cfg = gconfig.compose("ultrainteract", [])
    params = gconfig.stage_params(cfg, "report")
    table = pd.DataFrame([{"target": "llama31_8b", "arm": "grape", "benchmark": "humaneval", "accuracy": 0.5, "n": 10},
                          {"target": "llama31_8b", "arm": "grape", "benchmark": "mbpp", "accuracy": 0.3, "n": 10},
                          {"target": "llama31_8b", "arm": "grape", "benchmark": "leetcode", "accuracy": None, "n": 0}])  # fmt: skip
    paper = paper_table(params, table)
    row = paper[(paper["target"] == "llama31_8b") & (paper["arm"] == "grape")].iloc[0]
    assert row.iloc[2] == 41.5 and row["ours (mean x 100)"] == 40.0
    assert row["columns"].startswith("2 of 9 (humaneval, mbpp)")  # a mean over 2 columns is labelled as such
    assert row["paper, same columns"] == round((57.3 + 63.8) / 2, 1)  # the paper's per-column numbers, same 2
    other = paper[(paper["target"] == "llama31_8b") & (paper["arm"] == "original")].iloc[0]
    assert other["columns"] == "0 of 9" and pd.isna(other["ours (mean x 100)"])
    assert "Table 1" in paper.columns[2]
    assert paper_table(gconfig.stage_params(gconfig.compose("tiny", []), "report"), table).empty
