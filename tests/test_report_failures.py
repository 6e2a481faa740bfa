"""The report's list of cluster job attempts that failed: one row per Slurm log the executor kept, linked."""

from __future__ import annotations

from grape import report


def test_kept_slurm_logs_become_the_failure_list(tmp_path):
    logs = tmp_path / ".snakemake" / "slurm_logs"
    (logs / "rule_sft" / "tiny_a_grape").mkdir(parents=True)
    (logs / "rule_sft" / "tiny_a_grape" / "41.log").write_text("CUDA out of memory\n")
    (logs / "rule_verify").mkdir()
    (logs / "rule_verify" / "17.log").write_text("error\n")
    out = tmp_path / "results" / "x" / "report"
    out.mkdir(parents=True)
    table = report.cluster_failures(str(logs), out)
    assert table.to_dict("records") == [
        {"rule": "sft", "wildcards": "tiny_a_grape", "slurm_job": "41", "log": "../../../.snakemake/slurm_logs/rule_sft/tiny_a_grape/41.log"},
        {"rule": "verify", "wildcards": "", "slurm_job": "17", "log": "../../../.snakemake/slurm_logs/rule_verify/17.log"},
    ]  # fmt: skip
    assert (out / table["log"][0]).resolve().read_text() == "CUDA out of memory\n"
    assert report.cluster_failures(str(tmp_path / "none"), out).empty
