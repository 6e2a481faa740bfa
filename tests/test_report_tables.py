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
    from grape.report.stats import arm_sizes

    sel = _write(tmp_path / "strongest.jsonl", [_sel("a", "big")])
    (tmp_path / "strongest.jsonl.meta.json").write_text(json.dumps(
        {"counts": {"examples": 1, "instructions": 2, "strongest_shortfall": 3, "instructions_short_of_strongest": 1}}
    ))  # fmt: skip
    params = {"report": {"paper": {"source": "T2", "metric": "m", "values": {}, "instances": {"strongest": 350400}}}}
    row = arm_sizes(params, {("t", "strongest"): sel}).iloc[0]
    assert (row.examples, row["instructions read"], row.shortfall, row["paper's Num. Instances"]) == (1, 2, 3, 350400)


def _alpaca(tmp_path, name, lc, se=None):
    res = {"task": "alpaca_eval", "metric": "win,preference", "accuracy": 0.5, "n": 2, "n_unjudged": 0,
           "win_rate": 50.0, "lc_win_rate": lc, "lc_standard_error": se, "lc_note": None if lc else "LC not computed",
           "judge": {"model": "j", "base_url": "http://x/v1", "protocol": "p"}, "limit": None,
           "samples": [{"doc_id": i, "task": "alpaca_eval", "id": f"alpaca_eval:{i}", "target": "r", "output": "o",
                        "extracted": "preference 1.5", "correct": c} for i, c in enumerate((0.25, 0.75))]}  # fmt: skip
    return _write(tmp_path / f"{name}.json", [{"benchmarks": {"alpaca_eval": res}}])


def test_alpaca_evals_lc_is_its_own_column_beside_the_win_rate(tmp_path):
    """Table 2 has AE2-LC and AE2-WR: one judged job gives both rows, LC with alpaca_eval's standard error as its
    interval, and the paper table counts both columns; an LC that could not be computed is a row that says why."""
    import pytest

    from grape.io import DataError
    from grape.report.stats import paper_table

    params = {"targets": ["t"], "arms": [], "seed": 0, "report": {"bootstrap": 20, "ci": 0.95, "paper": {
        "source": "T2", "metric": "m", "values": {"t": {"base": 30.0}}, "columns": ["alpaca_eval_lc", "alpaca_eval"]}}}  # fmt: skip
    table, per_problem = report.results_table(params, {"evals": {("t", "base"): [_alpaca(tmp_path, "a", 62.5, 5.0)]}})
    lc = table[table.benchmark == "alpaca_eval_lc"].iloc[0]
    assert (lc.metric, lc.accuracy, lc.n) == ("lc_win_rate", 0.625, 2)
    assert (round(lc.ci_low, 3), round(lc.ci_high, 3)) == (0.527, 0.723)
    assert list(per_problem) == [("t", "base", "alpaca_eval")]  # no per-instruction LC: no paired interval
    row = paper_table(params, table).iloc[0]
    assert row.columns == "2 of 2" and row["ours (mean x 100)"] == pytest.approx(56.2, abs=0.05)
    table, _ = report.results_table(params, {"evals": {("t", "base"): [_alpaca(tmp_path, "b", None)]}})
    lc = table[table.benchmark == "alpaca_eval_lc"].iloc[0]
    assert (lc.n, lc.note) == (0, "LC not computed")
    assert paper_table(params, table).iloc[0].columns == "1 of 2 (alpaca_eval)"
    with pytest.raises(DataError, match=r"c\.json.*benchmarks\.alpaca_eval\.lc_win_rate.*got 150"):
        report.results_table(params, {"evals": {("t", "base"): [_alpaca(tmp_path, "c", 150.0)]}})
