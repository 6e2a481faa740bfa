"""Config values are data, never shell code: a checkout path, `cache_dir` and `vllm_env` holding spaces, quotes and
`$(touch ...)` reach the jobs as single words; the jobs work (or fail with the stage's own message) and nothing in
them is executed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import REPO

HOSTILE = "a b 'q\" $(touch {mark}) `touch {mark}`; touch {mark}"


def test_hostile_paths_and_config_values_never_run(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()

    def hostile(name):
        return HOSTILE.format(mark=marks / name)

    checkout = tmp_path / hostile("checkout")
    checkout.mkdir(parents=True)
    for part in ("Snakefile", "workflow", "config", "envs"):
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, checkout / part)
    venv = tmp_path / hostile("venv")
    venv.parent.mkdir(parents=True, exist_ok=True)
    venv.symlink_to(Path(sys.executable).parent.parent)  # this venv: its `grape` has no vLLM, and says so
    cache = tmp_path / hostile("cache")
    configfile = tmp_path / "hostile.yaml"
    configfile.write_text(
        yaml.safe_dump({"experiment": "tiny", "cache_dir": str(cache), "vllm_env": str(venv),
                        "sample": {"backend": "vllm"}})  # fmt: skip
    )
    work = tmp_path / "work"
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(checkout / "Snakefile"), "-d", str(work), "--cores", "2",
           "--configfile", str(configfile), "--keep-going", "results/tiny/candidates/tiny_a.jsonl"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    ran = sorted(p.name for p in marks.iterdir())
    assert ran == [], f"config values ran as shell code: {ran}"
    r = work / "results" / "tiny"
    # the jobs before it ran with the hostile HF_HOME exported as one word
    assert (r / "data" / "train.jsonl").exists() and (r / "models" / "tiny_a" / "grape_model.json").exists()
    # the sample job reached the vllm env's own `grape` (one word, spaces and quotes included), which has no vLLM
    assert proc.returncode != 0
    log = (r / "logs" / "sample" / "tiny_a.log").read_text()
    assert "grape sample: error" in log and "vllm" in log.lower(), log[-2000:]
    assert "No such file" not in log and "command not found" not in log
