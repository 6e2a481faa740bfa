"""The paper's two experiments plan here without network: `snakemake -n` lists the jobs a reproduction runs."""

from __future__ import annotations

import re
import shlex

import pytest
from helpers import REPO, snakemake

from grape import config as gconfig
from grape import sft

# jobs per rule: UltraInteract 6 sources x 4 targets x 4 arms, 16 score shards, (4 targets + 16 tuned) x 9
# benchmarks evaluated one job each; Tulu-3 0 sources x 3 targets x 7 arms (two of them on the pool of every pair:
# below_min + pool_all_available), (3 + 21) x 5 benchmarks
EXPECTED = {
    "ultrainteract": {
        "compose": 1, "data": 1, "model": 10, "sample": 6, "verify": 1, "score_shard": 64, "score_gather": 4,
        "select": 16, "sft": 16, "evaluate": 180, "report": 1, "all": 1,
    },
    "tulu3": {
        "compose": 1, "data": 1, "below_min": 1, "model": 3, "verify": 1, "pool_all_available": 1, "score_shard": 48,
        "score_gather": 3, "select": 21, "sft": 21, "evaluate": 120, "report": 1, "all": 1,
    },
}  # fmt: skip


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_paper_config_dry_runs_with_the_expected_jobs(tmp_path, name):
    proc = snakemake(tmp_path, "--cores", "1", "-n", "-p", "--config", f"experiment={name}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_counts(proc.stdout) == EXPECTED[name]
    # the paper's 4-GPU fine-tunes go through accelerate (a resource, so the checkout's path is no rerun trigger)
    fsdp = shlex.join([str(REPO / "config" / "accelerate" / "fsdp2.yaml")])
    assert f"Shell command: accelerate launch --config_file {fsdp} --num_processes 4 -m grape sft " in proc.stdout
    assert not (tmp_path / "results").exists()


def test_paper_configs_say_what_the_paper_says():
    ui = gconfig.compose("ultrainteract", [])
    assert ui["select"]["k"] == "original" and ui["select"]["strongest_source"] == "llama31_405b"
    assert ui["verify"]["drop_incorrect"] and ui["data"]["kind"] == "ultrainteract"
    tulu = gconfig.compose("tulu3", [])
    assert tulu["sources"] == [] and not tulu["verify"]["drop_incorrect"] and tulu["data"]["min_responses"] == 2
    assert tulu["select"]["original_sources"] == [tulu["data"]["datasets"][0]["name"]] == ["tulu-3-sft-mixture"]
    for cfg in (ui, tulu):
        assert cfg["sft"]["lr"] == 1e-5 and cfg["sft"]["epochs"] == 1 and cfg["sft"]["method"] == "full"
        assert cfg["sft"]["global_batch"] == 256 and cfg["sft"]["batch_size"] == 2
        assert sft.accumulation(256, 2, cfg["resources"]["sft_min_gpus"]) == 32  # the paper's 4-GPU node


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_rehearsal_plans_its_paper_experiments_jobs_at_toy_size(tmp_path, name):
    """The rehearsal (config/experiment/<name>_rehearsal.yaml) includes the paper config and changes only sizes:
    the same rules, arms, benchmark columns and target families; only the score shards shrink (16 -> 2 per target)."""
    proc = snakemake(tmp_path, "--cores", "1", "-n", "--config", f"experiment={name}_rehearsal")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs, paper = job_counts(proc.stdout), dict(EXPECTED[name])
    targets = len(gconfig.compose(name, [])["targets"])
    assert jobs.pop("score_shard") == 2 * targets and paper.pop("score_shard") == 16 * targets
    assert jobs == paper
    paper_cfg, rehearsal = gconfig.compose(name, []), gconfig.compose(f"{name}_rehearsal", [])
    assert rehearsal["select"]["arms"] == paper_cfg["select"]["arms"]
    assert rehearsal["evaluate"]["tasks"] == paper_cfg["evaluate"]["tasks"]
    assert {m["kind"] for m in rehearsal["models"].values()} == {"random"}
    families = {"llama31": "llama", "llama32": "llama", "mistral": "mistral", "qwen25": "qwen2", "mixtral": "mixtral",
                "codestral": "mistral"}  # fmt: skip
    for model, m in rehearsal["models"].items():
        assert m["architecture"] == next(f for p, f in families.items() if model.startswith(p)), model
