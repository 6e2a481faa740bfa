"""The `tiny` experiment through the Snakemake SLURM executor on a real one-node Slurm on localhost, with the repo's
profile (`profiles/slurm`): it must finish and give the same results as the local run.

The cluster comes up with `ci/slurm_local.sh up` (Debian's slurmctld/slurmd/munge, which `make slurm` installs
before the tests: config at /etc/slurm/slurm.conf because the job step drops SLURM_CONF), as root.
There is no accounting database, so the plugin polls `squeue` (`--slurm-status-command squeue`, which needs
MinJobAge >= 3 x the initial status delay: the script sets 300 s) and runs without an account
(`--slurm-no-account`). Skipped, saying why, without root or without the Slurm packages (`make slurm`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, snakemake

pytestmark = pytest.mark.env
SCRIPT = REPO / "ci" / "slurm_local.sh"
SAME = ["pool/pool.jsonl", "scores/tiny_a/base.jsonl"] + [
    f"selections/tiny_a/{arm}.jsonl" for arm in ("grape", "reverse", "random", "strongest", "all", "original")
]
# The jobs up to every selection go through sbatch (data, model, sample, verify, score shards and gather, select):
# the executor, the profile, resources and run options are what is tested here; fine-tunes and evaluations are
# model jobs of the same kind (resources per model, one more level of the DAG each) and would only add minutes.
TARGETS = [f"results/tiny/{rel}" for rel in SAME]


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0 or not shutil.which("slurmctld"):
        pytest.skip("a local Slurm needs root and Debian's slurmctld/slurmd/munge (`make slurm` installs them)")
    env = {**os.environ, "SLURM_LOCAL_DIR": "/tmp/grape-slurm"}
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, env=env, timeout=600)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
    assert shutil.which("sbatch"), "slurm_local.sh up left no sbatch on PATH"
    yield
    subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, env=env, timeout=120)


def _cluster_state() -> str:
    """What Slurm says about its node, queue and recent jobs, and the end of its daemons' logs: printed when the
    run does not finish, so a CI failure says why."""
    parts = []
    for cmd in (["sinfo", "-N", "-l"], ["sinfo", "-R"], ["squeue", "-l"], ["scontrol", "show", "node"]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        parts.append(f"$ {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    for log in ("slurmctld.log", "slurmd.log"):
        path = Path("/tmp/grape-slurm/log") / log
        if path.exists():
            parts.append(f"--- {path} (end)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
    return "\n".join(parts)


def test_tiny_through_the_slurm_executor_matches_the_local_run(cluster, tiny_run, tmp_path):
    _, local = tiny_run
    try:
        proc = snakemake(
            tmp_path,
            "--profile", str(REPO / "profiles/slurm"),
            "--config", "experiment=tiny",
            "--jobs", "4",
            "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "2",
            "--slurm-no-account",
            "--latency-wait", "5",
            *TARGETS,
            timeout=900,
        )  # fmt: skip
    except subprocess.TimeoutExpired as err:
        said = (err.stderr or b"").decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        pytest.fail(f"the run through Slurm did not finish in {err.timeout} s\n{said[-5000:]}\n{_cluster_state()}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:] + "\n" + _cluster_state()
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    assert len(submitted) >= 14, "the jobs did not go through sbatch"  # every job of the targets
    assert not (tmp_path / ".snakemake" / "slurm_logs").exists() or not list(
        (tmp_path / ".snakemake" / "slurm_logs").rglob("*.log")
    )  # the executor keeps only failed jobs' logs: none failed
    remote = tmp_path / "results" / "tiny"
    for rel in SAME:
        assert (remote / rel).read_bytes() == (local / rel).read_bytes(), rel
