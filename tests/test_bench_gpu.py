"""`bench/gpu.sh --smoke`: the prepared GPU benchmark, run as it is at tiny shapes on CPU, so the script a person
runs on a GPU is known to work end to end (scoring: plain vs engine; SFT: padded vs padding-free) and to print
what it promises. Its GPU figures come from a GPU; here only that it runs and reports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow  # bench/gpu.sh end to end (its SFT and scoring runs as subprocesses)


def test_the_gpu_script_runs_as_a_smoke_test_on_cpu():
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    }
    proc = subprocess.run(
        [str(REPO / "bench" / "gpu.sh"), "--smoke"], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "CPU:" in out and "flags:" in out  # the machine beside every table
    engine = re.search(r"^engine\s+\S+\s+\S+\s+(\S+)\s.*\s(\d+)/(\d+)\s*$", out, re.M)
    assert engine and float(engine.group(1)) > 0  # x plain
    assert re.search(r"measured matmul peak \(2048\^3 \w+", out)
    rows = {m: re.search(rf"^{m}\s+(\d+)\s+\d+\s+(\w+)\s+(on|off)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%", out, re.M)
            for m in ("padded", "padding-free")}  # fmt: skip
    assert all(rows.values()), out[-2000:]
    for row in rows.values():
        assert int(row.group(4).replace(",", "")) > 0 and float(row.group(6)) > 0  # tokens/s, measured peak
    assert "gradient checkpointing: CPU" in out
    assert Path(REPO / "bench" / "gpu.sh").stat().st_mode & 0o111
