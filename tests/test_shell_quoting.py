"""Config values are data, never shell code: a checkout path, `cache_dir` and `vllm_env` holding spaces, quotes and
`$(touch ...)` reach the jobs as single words; the jobs work (or fail with the stage's own message) and nothing in
them is executed. (tests/test_sample_vllm.py runs the same hostile paths with a real vLLM env.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

HOSTILE = "a b 'q\" $(touch {mark}) `touch {mark}`; touch {mark}"


def hostile_setup(tmp_path: Path, venv: Path, **config) -> tuple[list[str], Path, Path]:
    """A copy of the workflow at a hostile path, and a config whose `cache_dir` and `vllm_env` (a link to `venv`)
    are hostile paths: (the snakemake command without targets, the folder any executed `touch` writes to, workdir)."""
    marks = tmp_path / "marks"
    marks.mkdir()

    def hostile(name):
        return tmp_path / HOSTILE.format(mark=marks / name)

    checkout = hostile("checkout")
    checkout.mkdir(parents=True)
    for part in ("Snakefile", "workflow", "config", "envs"):
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, checkout / part)
    env_link = hostile("venv")
    env_link.parent.mkdir(parents=True, exist_ok=True)
    env_link.symlink_to(venv)
    configfile = tmp_path / "hostile.yaml"
    configfile.write_text(
        yaml.safe_dump({"experiment": "tiny", "cache_dir": str(hostile("cache")), "vllm_env": str(env_link), **config})
    )
    work = tmp_path / "work"
    # --configfile takes several values: targets cannot follow it
    cmd = [sys.executable, "-m", "snakemake", "-s", str(checkout / "Snakefile"), "-d", str(work),
           "--configfile", str(configfile), "--cores", "2"]  # fmt: skip
    return cmd, marks, work


@pytest.mark.slow  # the real snakemake, dry and wet
def test_hostile_paths_and_config_values_never_run(tmp_path):
    # the vllm env is this venv: its `grape` has no vLLM, and says so
    cmd, marks, work = hostile_setup(tmp_path, Path(sys.executable).parent.parent, sample={"backend": "vllm"})
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run([*cmd, "results/tiny/candidates/tiny_a.jsonl"], capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip
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
