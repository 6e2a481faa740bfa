"""`pip install .` (not editable) ships what `grape compose` needs: the default configs and the schema."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_for_setuptools():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "grape").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.slow
def test_plain_install_composes_without_the_checkout(tmp_path):
    # Build from a copy of the tracked files, so the build leaves nothing in the checkout.
    src, site = tmp_path / "src", tmp_path / "site"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((REPO / name).read_bytes())
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(site),
        str(src),
    ]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (site / "grape/conf/experiment/demo.yaml").exists() and (site / "grape/schemas/config.schema.yaml").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPE_")}
    env["PYTHONPATH"] = str(site)
    run = tmp_path / "elsewhere"
    run.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "import grape.config as c; print(c.__file__); print(c.CONFIG_DIR)"],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    proc = subprocess.run(
        [sys.executable, "-m", "grape", "compose", "--experiment", "demo", "sample.n=3"],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "name: demo" in proc.stdout and "  n: 3" in proc.stdout
    assert not list(run.iterdir())  # composing writes nothing
