"""Killing `snakemake` itself does not leave its `grape` job running (grape.watchdog)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO


def _grape_jobs(stage: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(argv) > 2 and argv[1].endswith(b"/grape") and argv[2] == stage.encode():
                out.append(int(d))
    return out


@pytest.mark.slow  # a real snakemake, killed
def test_a_job_stops_when_its_snakemake_is_killed(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "results/tiny/candidates/tiny_a.jsonl", "--cores", "2",
           "--config", "experiment=tiny", "overrides=sample.n=64 sample.max_new_tokens=512 sample.stop=[]"]  # fmt: skip
    before = set(_grape_jobs("sample"))
    smk = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline, jobs = time.time() + 300, []
        while time.time() < deadline and not jobs and smk.poll() is None:
            jobs = [p for p in _grape_jobs("sample") if p not in before]
            time.sleep(0.2)
        assert jobs, "the sample job never started"
        time.sleep(3)  # the job is under way (its watchdog has found its snakemake)
        smk.send_signal(signal.SIGKILL)
        smk.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in jobs):
            time.sleep(0.2)
        left = [p for p in jobs if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text()]
        assert not left, "the grape job outlived its snakemake"
        log = (tmp_path / "results/tiny/logs/sample/tiny_a.log").read_text()
        assert "the snakemake that started this job" in log and "is gone" in log
    finally:
        for p in _grape_jobs("sample"):
            if p not in before:
                os.kill(p, signal.SIGKILL)
        if smk.poll() is None:
            smk.kill()
