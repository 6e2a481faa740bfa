"""`snakemake prefetch` / `grape prefetch`: everything an experiment downloads, fetched ahead, on a login node.

Cluster compute nodes usually have no internet, and every other job of the suite runs offline
(`grape.runtime.OFFLINE_ENV`). So before a cluster run, on a machine with internet:

    snakemake prefetch --config experiment=ultrainteract     # or: grape prefetch --experiment ultrainteract

downloads every hub model and dataset the experiment names (`needs`) into the cache (`cache_dir` in the config,
HF_HOME-style; Hugging Face's default cache when null), at the pinned revision when one is given, and writes
`results/<name>/prefetch.json`: for each, the hub id, the revision asked for, the commit it resolved to, and the
sha256 of every file fetched. Models fetch their safetensors weights, configs and tokenizer files only (weights
load as safetensors; no pickled `.bin`). `--dry-run` lists what would be fetched without any network.

Jobs that then find something missing stop at once, naming it and this command (`missing_message`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

MODEL_FILES = ["*.safetensors", "*.safetensors.index.json", "*.json", "tokenizer*", "*.model", "*.tiktoken", "*.txt"]


def needs(cfg: Mapping) -> list[dict]:
    """Every hub model and dataset of the experiment (local paths are not fetched), in config order."""
    out = []
    for name, m in cfg["models"].items():
        if m["kind"] == "hf" and not Path(m["path"]).exists():
            out.append({"kind": "model", "name": name, "id": m["path"], "revision": m.get("revision")})
    d = cfg["data"]
    if d["kind"] in ("generic", "ultrainteract") and d.get("path") and not Path(d["path"]).exists():
        out.append({"kind": "dataset", "name": "data", "id": d["path"], "revision": d.get("revision")})
    for ds in d.get("datasets") or []:
        if not Path(ds["path"]).exists():
            out.append({"kind": "dataset", "name": ds["name"], "id": ds["path"], "revision": ds.get("revision")})
    from grape import alpaca

    e = cfg["evaluate"]
    if any(e["benchmarks"].get(n, {}).get("task") == alpaca.NAME and not e["benchmarks"][n].get("reference")
           for n in e["tasks"]):  # fmt: skip
        out.append({"kind": "dataset", "name": "alpaca_eval", "id": alpaca.HUB_ID, "revision": None,
                    "files": alpaca.HUB_FILES})  # fmt: skip
    return out


def command(experiment: str | None) -> str:
    return f"snakemake prefetch --config experiment={experiment or '<name>'}"


def missing_message(what: str, hub_id: str, revision: str | None, experiment: str | None) -> str:
    cache = os.environ.get("HF_HOME") or "the Hugging Face default cache"
    return (
        f"{what} {hub_id!r} (revision {revision or 'main'}) is not in the cache ({cache}) and this job runs "
        f"offline; on a machine with internet run `{command(experiment)}` first (README: Offline clusters)"
    )


def model_available(hub_id: str, revision: str | None) -> bool:
    """Whether a hub model's config is in the local cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    return isinstance(found, str)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(cfg: Mapping, dry_run: bool = False) -> list[dict]:
    """Download `needs(cfg)` into the cache; one record per item (what `prefetch.json` holds)."""
    items = needs(cfg)
    if dry_run:
        return items
    from huggingface_hub import snapshot_download
    from tqdm import tqdm

    records = []
    for item in tqdm(items, desc="prefetch", unit=" repos"):
        model = item["kind"] == "model"
        folder = Path(
            snapshot_download(
                item["id"],
                revision=item["revision"],
                repo_type="model" if model else "dataset",
                allow_patterns=MODEL_FILES if model else item.get("files"),
            )
        )
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        records.append(
            {
                **item,
                "commit": folder.name,  # snapshots/<commit>
                "files": {str(p.relative_to(folder)): _sha256(p) for p in files},
            }
        )
    return records
