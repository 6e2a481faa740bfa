"""Report tables that read the selections: the source shares count the sources the selections hold (a Tulu-3 mix's
datasets, with no sampled sources at all), and selected-vs-not leaves out what an arm could not pick."""

from __future__ import annotations

import json

from grape import report


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sel(cid, src, iid="q0", lp=None):
    return {"prompt": "Question: x\nAnswer:", "completion": " y", "instruction_id": iid, "candidate_id": cid,
            "source": src, "mean_logprob": lp, "messages": []}  # fmt: skip


def test_source_shares_count_the_datasets_of_a_mix(tmp_path):
    grape = _write(tmp_path / "grape.jsonl", [_sel("a", "tulu-3-sft-mixture"), _sel("b", "olmo-pref", "q1"),
                                               _sel("c", "olmo-pref", "q2")])  # fmt: skip
    params = {"targets": ["t"], "arms": ["grape"], "sources": []}  # the Tulu-3 setting: no sampled sources
    table = report.selection_sources(params, {"selections": {("t", "grape"): grape}})
    got = {r.source: (r.selected, round(r.share, 3)) for r in table.itertuples()}
    assert got == {"olmo-pref": (2, 0.667), "tulu-3-sft-mixture": (1, 0.333)}


def test_selected_vs_not_leaves_out_the_targets_own_samples_under_exclude_self(tmp_path):
    grape = _write(tmp_path / "grape.jsonl", [_sel("q0:a:0", "a", lp=-1.0)])
    scores = _write(tmp_path / "scores.jsonl", [
        {"candidate_id": c, "instruction_id": "q0", "source": s, "n_tokens": 2, "sum_logprob": 2 * lp,
         "mean_logprob": lp, "truncated": False}
        for c, s, lp in (("q0:a:0", "a", -1.0), ("q0:b:0", "b", -2.0), ("q0:t:0", "t", -0.5))
    ])  # fmt: skip
    files = {"selections": {("t", "grape"): grape}, "scores": {"t": scores}}
    row = report.selected_vs_not({"targets": ["t"], "arms": ["grape"], "exclude_self": True}, files).iloc[0]
    assert (row.selected, row.not_selected, row.own_samples_not_eligible) == (1, 1, 1)
    assert row.not_selected_mean_logprob == -2.0  # the target's own -0.5 could not be picked: not counted as passed
    row = report.selected_vs_not({"targets": ["t"], "arms": ["grape"], "exclude_self": False}, files).iloc[0]
    assert (row.not_selected, row.own_samples_not_eligible) == (2, 0)


def test_arm_sizes_show_examples_shortfall_and_the_papers_num_instances(tmp_path):
    from grape.report_stats import arm_sizes

    sel = _write(tmp_path / "strongest.jsonl", [_sel("a", "big")])
    (tmp_path / "strongest.jsonl.meta.json").write_text(json.dumps(
        {"counts": {"examples": 1, "instructions": 2, "strongest_shortfall": 3, "instructions_short_of_strongest": 1}}
    ))  # fmt: skip
    params = {"report": {"paper": {"source": "T2", "metric": "m", "values": {}, "instances": {"strongest": 350400}}}}
    row = arm_sizes(params, {("t", "strongest"): sel}).iloc[0]
    assert (row.examples, row.instructions, row.shortfall, row["paper's Num. Instances"]) == (1, 2, 3, 350400)
