"""The real workflow, end to end, on the `tiny` experiment (tiny random models built by the workflow).

Runs `snakemake` in a temporary working directory and checks every stage's output, then that a rerun has
nothing to do and that changing one SFT value reruns only SFT and what depends on it.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import snakemake

from grape.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def rows(path: Path) -> list[dict]:
    return read_jsonl(path)


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def test_data_candidates_pool(run):
    _, r = run
    train, test = rows(r / "data/train.jsonl"), rows(r / "data/test.jsonl")
    assert len(train) == 6 and len(test) == 6
    for source in ("tiny_a", "tiny_b"):
        cands = rows(r / f"candidates/{source}.jsonl")
        assert len(cands) == 6 * 2
        assert {c["sampling"]["temperature"] for c in cands} == {0.8}
        cost = json.loads((r / f"candidates/{source}.jsonl.meta.json").read_text())["counts"]["cost"]
        assert cost["requests"] == 12 and cost["failures"] == 0 and cost["completion_tokens"] > 0
        assert (r / f"logs/sample/{source}.missing.jsonl").read_text() == ""
    pool = rows(r / "pool/pool.jsonl")
    counts = json.loads((r / "pool/verify_counts.json").read_text())
    assert len(pool) == sum(c["kept"] for c in counts) == 6 + 24 - sum(c["dropped_empty"] for c in counts)
    assert sum(1 for p in pool if p["source"] == "original") == 6
    meta = json.loads((r / "pool/pool.jsonl.meta.json").read_text())
    assert meta["inputs"]["train"]["sha256"] and meta["versions"]["torch"]


def test_scores_and_grape_argmax(run):
    _, r = run
    pool = {p["candidate_id"]: p for p in rows(r / "pool/pool.jsonl")}
    scores = rows(r / "scores/tiny_a/base.jsonl")
    meta = json.loads((r / "scores/tiny_a/base.jsonl.meta.json").read_text())
    assert len(scores) + meta["counts"]["skipped"] == len(pool)
    assert meta["counts"]["shards"] == 2  # tiny scores in two scatter/gather shards
    assert len(rows(r / "scores/tiny_a/base.skipped.jsonl")) == meta["counts"]["skipped"]
    assert not list((r / "scores/tiny_a/base").glob("*.partial"))  # checkpoints are removed once a shard is done
    by_instruction = defaultdict(list)
    for s in scores:
        assert s["n_tokens"] > 0 and s["mean_logprob"] == pytest.approx(s["sum_logprob"] / s["n_tokens"])
        assert s["mean_logprob"] < 0
        by_instruction[s["instruction_id"]].append(s)
    grape = rows(r / "selections/tiny_a/grape.jsonl")
    reverse = rows(r / "selections/tiny_a/reverse.jsonl")
    assert len(grape) == len(reverse) == len(by_instruction) == 6
    for g, v in zip(grape, reverse):
        cands = by_instruction[g["instruction_id"]]
        best = max(c["mean_logprob"] for c in cands)
        assert g["mean_logprob"] == best
        assert g["candidate_id"] == min(c["candidate_id"] for c in cands if c["mean_logprob"] == best)
        assert v["mean_logprob"] == min(c["mean_logprob"] for c in cands)
        instruction, response = (m["content"] for m in g["messages"])
        assert g["prompt"] + g["completion"] == f"Question: {instruction}\nAnswer: {response}"


def test_selection_sizes(run):
    _, r = run
    pool = rows(r / "pool/pool.jsonl")
    sizes = {
        arm: len(rows(r / f"selections/tiny_a/{arm}.jsonl"))
        for arm in ("grape", "reverse", "random", "strongest", "all", "original")
    }
    assert sizes["random"] == sizes["original"] == 6
    assert sizes["all"] == len(pool)
    # strongest: only tiny_b's responses, as many per instruction as the original has (the paper's definition)
    per = {iid: sum(p["source"] == "original" and p["instruction_id"] == iid for p in pool) for iid in sizes_iids(pool)}
    assert sizes["strongest"] == sum(
        min(n, sum(p["source"] == "tiny_b" and p["instruction_id"] == iid for p in pool)) for iid, n in per.items()
    )


def sizes_iids(pool) -> set[str]:
    return {p["instruction_id"] for p in pool}


def test_sft_changed_the_weights(run):
    from safetensors.torch import load_file

    _, r = run
    base = load_file(r / "models/tiny_a/model.safetensors")
    tuned = load_file(r / "sft/tiny_a/grape/model.safetensors")
    assert set(base) == set(tuned)
    changed = [k for k in base if not (base[k] == tuned[k]).all()]
    assert any("q_proj" in k for k in changed)  # LoRA targets q,k,v,o: merged into the base weights
    assert not any("mlp" in k for k in changed)
    log = json.loads((r / "sft/tiny_a/grape/train_log.json").read_text())
    assert log["counts"]["examples"] == 6 and log["counts"]["steps"] >= 1


def test_lm_eval_metric_and_report(run):
    workdir, r = run
    arms = ["base", "grape", "reverse", "random", "strongest", "all", "original"]
    for arm in arms:
        result = json.loads((r / f"evaluate/tiny_a/{arm}/local.json").read_text())["benchmarks"]["local"]
        assert 0.0 <= result["accuracy"] <= 1.0
        assert len(result["samples"]) == 6
    with open(r / "report/results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [(t["arm"], t["benchmark"]) for t in table] == [(a, "local") for a in arms]
    assert all(float(t["ci_low"]) <= float(t["accuracy"]) <= float(t["ci_high"]) for t in table)
    assert int(next(t for t in table if t["arm"] == "all")["train_examples"]) == len(rows(r / "pool/pool.jsonl"))
    with open(r / "report/paired.csv") as fh:
        paired = list(csv.DictReader(fh))
    # every arm but the reference itself, minus original and minus grape, on the 6 shared problems
    assert len(paired) == 2 * (len(arms) - 1) and {p["n"] for p in paired} == {"6"}
    assert all(float(p["lo"]) <= float(p["delta"]) <= float(p["hi"]) for p in paired)
    said = (r / "report/outcome.txt").read_text()
    assert "grape" in said and "original" in said and "points" in said
    costs = {c["stage"]: c for c in csv.DictReader(open(r / "report/costs.csv"))}
    assert int(costs["sft"]["jobs"]) == len(arms) - 1 and float(costs["evaluate"]["wall_seconds"]) > 0
    assert int(costs["score"]["tokens"]) > 0 and int(costs["sample"]["tokens"]) > 0
    loss = list(csv.DictReader(open(r / "report/loss.csv")))
    assert {x["arm"] for x in loss} == set(arms[1:])
    html = (r / "report/summary.html").read_text()
    assert "<h2>Paired differences (same problems)</h2>" in html and "<h2>SFT loss</h2>" in html
    assert "<h2>Sampling cost</h2>" in html and "completion_tokens" in html
    assert "<h2>Training</h2>" in html and "<h2>Scoring</h2>" in html and "dtype_reason" in html
    assert json.loads((r / "scores/tiny_a/base.jsonl.meta.json").read_text())["counts"]["dtype"] in (
        "float32",
        "bfloat16",
    )
    assert "grape" in html and (r / "report/source_share.svg").stat().st_size > 1000


def _dry_jobs(workdir, *changes: str) -> list[list[tuple[str, dict]]]:
    """Per config change, (rule, wildcards) of every job `snakemake -n` would run: the dry runs go side by side (they
    write nothing, so they share the finished run)."""
    from helpers import snakemake_started

    procs = [snakemake_started(workdir, "--cores", "2", "-n", "--config", "experiment=tiny",
                               *([f"overrides={c}"] if c else [])) for c in changes]  # fmt: skip
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]
        jobs = []
        for block in re.split(r"\n(?=(?:local)?rule \w+:)", stdout):
            m = re.match(r"(?:local)?rule (\w+):", block.strip())
            if m and m.group(1) != "all":
                wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
                jobs.append((m.group(1), dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}))
        out.append(jobs)
    return out


def _kinds(jobs) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for rule, _ in jobs:
        out[rule] += 1
    return dict(out)


def test_a_rerun_runs_exactly_what_a_change_touches(run):
    """Params are what changes the output: nothing else reruns (asserted from `snakemake -n`'s job list)."""
    workdir, _ = run
    same, operational, recipe, added, bench, chain = _dry_jobs(
        workdir,
        "",
        # operational values: another machine's cores, a retry, the request window, checkpoints
        "threads=1 sample.concurrency=4 sample.retries=9 sample.timeout_s=9 sft.save_steps=5",
        "sft.lr=0.02",  # the recipe
        "select.arms=[grape,reverse,random,strongest,all,original,self]",  # one more arm
        "evaluate.tasks=[local,gsm_plus]",  # one more benchmark
        "targets=[tiny_a,tiny_b]",  # one more target (tiny_b is already a source: no model job)
    )
    assert same == [] and operational == []
    # the recipe: every fine-tune and what evaluates or reports it, nothing upstream
    assert _kinds(recipe) == {"compose": 1, "sft": 6, "evaluate": 6, "report": 1}
    # one more arm: its own selection, fine-tune and evaluation, and the report
    assert _kinds(added) == {"compose": 1, "select": 1, "sft": 1, "evaluate": 1, "report": 1}
    assert all(wc.get("arm", "self") == "self" for _, wc in added)
    # one more benchmark: its evaluation of every model, and the report
    assert _kinds(bench) == {"compose": 1, "evaluate": 7, "report": 1}
    assert {wc["benchmark"] for r, wc in bench if r == "evaluate"} == {"gsm_plus"}
    # one more target: its own chain only
    assert {wc.get("target") for r, wc in chain if r not in ("compose", "report")} == {"tiny_b"}
    assert {"score_shard", "select", "sft", "evaluate"} <= set(_kinds(chain)) and "sample" not in _kinds(chain)
    # a dry run writes nothing: the composed config on disk is still the one the run wrote
    assert "lr: 0.02" not in (workdir / "results/tiny/config.yaml").read_text()


def test_editing_a_local_benchmark_file_reruns_exactly_its_evaluations(run, tmp_path):
    """A benchmark's local file is an input of its evaluate jobs: editing it reruns those jobs and the report, and
    nothing else (not the other benchmark's evaluations). On a copy of the finished run (one arm, to keep it short), so
    the other tests share the original."""
    import shutil

    workdir = tmp_path / "copy"
    shutil.copytree(run[0], workdir, symlinks=True)
    bench = workdir / "theoremqa.jsonl"
    shutil.copy(REPO / "tests/fixtures/benchmarks/theoremqa.jsonl", bench)
    b = "evaluate.benchmarks.theoremqa"
    extra = (f"select.arms=[grape] evaluate.tasks=[local,theoremqa] {b}.limit=1 {b}.max_gen_toks=2 "
             f"{b}.dataset={{dataset_path:json,dataset_name:null,dataset_kwargs:{{data_files:{{test:'{bench}'}}}}}}")  # fmt: skip
    proc = snakemake(workdir, "--cores", "2", "--config", "experiment=tiny", f"overrides={extra}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (before,) = _dry_jobs(workdir, extra)
    bench.write_text(
        bench.read_text().replace("\n", "\n", 1) + bench.read_text().splitlines()[0] + "\n"
    )  # one row more
    (after,) = _dry_jobs(workdir, extra)
    assert before == []
    assert _kinds(after) == {"evaluate": 2, "report": 1}  # the untuned target and its grape fine-tune
    assert {wc["benchmark"] for r, wc in after if r == "evaluate"} == {"theoremqa"}


def test_jobs_record_the_code_version(run):
    _, r = run
    meta = json.loads((r / "selections/tiny_a/grape.jsonl.meta.json").read_text())
    assert set(meta["code"]) >= {"commit", "dirty"}
    assert meta["code"]["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", meta["code"]["commit"])
    assert meta["params"]["arm"] == "grape" and meta["params"]["select"]["k"] == 1
    for out in ("report/results.csv", "config.yaml"):  # the main result and the composed config too
        assert set(json.loads((r / f"{out}.meta.json").read_text())["code"]) >= {"commit", "dirty"}


def test_dry_run_on_a_clean_directory_writes_nothing(tmp_path):
    proc = snakemake(tmp_path, "--cores", "1", "-n", "--config", "experiment=tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compose" in proc.stdout and not (tmp_path / "results").exists()


def test_bad_config_stops_before_any_job(tmp_path):
    proc = snakemake(tmp_path, "--cores", "1", "-n", "--config", "experiment=tiny", "overrides=sft.lr=fast")
    assert proc.returncode != 0
    assert "sft.lr" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_pick_gives_the_workflow_grape_selection(run, tmp_path):
    """`grape pick` runs the same stage code: on the workflow's pool, and on the same pairs as a plain JSONL."""
    _, r = run
    grape = str(Path(sys.executable).parent / "grape")
    workflow = rows(r / "selections/tiny_a/grape.jsonl")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({k: p[k] for k in ("instruction", "response", "source")}) + "\n"
            for p in rows(r / "pool/pool.jsonl")
        )
    )

    def key(row, by):  # candidate ids only match when the workflow's own pool is given
        return row["candidate_id"] if by == "id" else tuple(m["content"] for m in row["messages"])

    for pool, by in ((r / "pool/pool.jsonl", "id"), (pairs, "text")):
        out = tmp_path / f"picked_{by}.jsonl"
        cmd = [grape, "pick", "--pool", str(pool), "--target", str(r / "models/tiny_a"), "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        picked = rows(out)
        assert sorted(key(p, by) for p in picked) == sorted(key(w, by) for w in workflow)
        assert [p["prompt"] + p["completion"] for p in sorted(picked, key=lambda p: p["prompt"])] == [
            w["prompt"] + w["completion"] for w in sorted(workflow, key=lambda w: w["prompt"])
        ]
