"""`snakemake prefetch` / `grape prefetch`: everything an experiment downloads, fetched ahead, on a login node.

Cluster compute nodes usually have no internet, and every other job of the suite runs offline
(`grape.runtime.OFFLINE_ENV`). So before a cluster run, on a machine with internet:

    snakemake prefetch --config experiment=ultrainteract     # or: grape prefetch --experiment ultrainteract

downloads every hub model and dataset the experiment names (`needs`), and every dataset its benchmarks read
(`grape.bench_data`: all subsets and few-shot splits), into the cache (`cache_dir` in the config,
HF_HOME-style; Hugging Face's default cache when null), at the pinned revision when one is given, and writes
`results/<name>/prefetch.json`: for each, the hub id, the revision asked for, the commit it resolved to, and the
sha256 of every file fetched. Models fetch their safetensors weights, configs and tokenizer files only (weights
load as safetensors; no pickled `.bin`). `--dry-run` lists what would be fetched without any network.

Jobs that then find something missing stop at once, naming it and this command (`missing_message`). A path that
looks local (`looks_local`) and does not exist is a missing file, never a hub id to fetch (`not_found`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from grape.provenance import sha256_path

# Suffixes of data files: a path ending in one is a file, never a hub id (hub ids such as `org/Llama-3.1-8B` have dots).
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".arrow", ".txt", ".gz", ".zst", ".bz2", ".xz")
MODEL_FILES = ["*.safetensors", "*.safetensors.index.json", "*.json", "tokenizer*", "*.model", "*.tiktoken", "*.txt"]


def looks_local(path: str) -> bool:
    """Whether `path` can only be a local path, not a hub id (`owner/name`, or a bare legacy `name`): absolute,
    starting with `./`, `../` or `~`, ending in a data file suffix, with a backslash, or with more than one `/`
    (or an empty part between them)."""
    path = str(path)
    if not path or path in (".", "..") or os.path.isabs(path) or path.startswith(("~", "./", "../")):
        return True
    if "\\" in path or path.lower().endswith(FILE_SUFFIXES):
        return True
    parts = path.split("/")
    return len(parts) > 2 or any(not part for part in parts)


def not_found(path: str) -> str:
    """The message for a local-looking path that does not exist (where a relative one was looked for)."""
    where = "" if os.path.isabs(os.path.expanduser(path)) else f" (relative to {os.getcwd()})"
    return f"file not found: {path}{where}; a hub id is `owner/name`"


def is_hub_id(path: str) -> bool:
    """A path that does not exist here and could be a hub id; a local-looking one that does not exist raises
    FileNotFoundError naming it."""
    if os.path.exists(os.path.expanduser(path)):
        return False
    if looks_local(path):
        raise FileNotFoundError(not_found(path))
    return True


def needs(cfg: Mapping) -> list[dict]:
    """Every hub model and dataset of the experiment (local paths are not fetched), in config order; a missing
    local-looking path stops it (FileNotFoundError), rather than being fetched as a hub id."""
    out = []
    for name, m in cfg["models"].items():
        if m["kind"] == "hf" and is_hub_id(m["path"]):
            out.append({"kind": "model", "name": name, "id": m["path"], "revision": m.get("revision")})
    d = cfg["data"]
    if d["kind"] in ("generic", "ultrainteract") and d.get("path") and is_hub_id(d["path"]):
        out.append({"kind": "dataset", "name": "data", "id": d["path"], "revision": d.get("revision")})
    for ds in d.get("datasets") or []:
        if is_hub_id(ds["path"]):
            out.append({"kind": "dataset", "name": ds["name"], "id": ds["path"], "revision": ds.get("revision")})
    from grape import alpaca

    e = cfg["evaluate"]
    if any(e["benchmarks"].get(n, {}).get("task") == alpaca.NAME and not e["benchmarks"][n].get("reference")
           for n in e["tasks"]):  # fmt: skip
        out.append({"kind": "dataset", "name": "alpaca_eval", "id": alpaca.HUB_ID, "revision": None,
                    "files": alpaca.HUB_FILES})  # fmt: skip
    return out + benchmark_needs(e)


def benchmark_needs(e: Mapping) -> list[dict]:
    """Every hub dataset (and config) the lm-eval benchmarks of `evaluate.tasks` read (`grape.bench_data`): all
    subsets and few-shot splits, as lm-eval loads them; local copies are not fetched."""
    from grape import alpaca, bench_data

    run = [n for n in e["tasks"] if n != "local" and e["benchmarks"][n]["task"] != alpaca.NAME]
    if not run:
        return []
    downloads = [{"kind": "download", "name": n, "id": e["benchmarks"][n]["download"]["url"], "revision": None,
                  "sha256": e["benchmarks"][n]["download"]["sha256"]}
                 for n in run if e["benchmarks"][n].get("download")]  # fmt: skip
    tm = bench_data.task_manager()
    items = [
        it
        for n in run
        for it in bench_data.reads(tm, n, e["benchmarks"][n], bench_data.local_copy(n, e["benchmarks"][n]))
    ]
    return downloads + [{"kind": "benchmark", "name": it["benchmark"], "id": it["id"], "config": it["config"],
                         "revision": None, **({"kwargs": it["kwargs"]} if it.get("kwargs") else {})}
                        for it in items if not bench_data.is_local(it) and not looks_local(it["id"])]  # fmt: skip


def command(experiment: str | None) -> str:
    return f"snakemake prefetch --config experiment={experiment or '<name>'}"


def missing_message(what: str, hub_id: str, revision: str | None, experiment: str | None) -> str:
    """`experiment`: the workflow's job (the way out is `snakemake prefetch`); None outside the workflow
    (`grape pick`, the API: the way out is to let this process download, HF_HUB_OFFLINE=0)."""
    cache = os.environ.get("HF_HOME") or "the Hugging Face default cache"
    head = f"{what} {hub_id!r} (revision {revision or 'main'}) is not in the cache ({cache})"
    if experiment is None:
        return (
            f"{head} and HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')} forbids downloading it; run again with "
            f"HF_HUB_OFFLINE=0 (and internet) to download it, or give a local path"
        )
    return (
        f"{head} and this job runs offline; on a machine with internet run `{command(experiment)}` first "
        f"(README: Offline clusters)"
    )


def download_model(hub_id: str, revision: str | None) -> Path:
    """A hub model's safetensors weights, configs and tokenizer files into the cache (`MODEL_FILES`); its folder."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(hub_id, revision=revision, repo_type="model", allow_patterns=MODEL_FILES))


def model_available(hub_id: str, revision: str | None) -> bool:
    """Whether a hub model's config is in the local cache (no network)."""
    return cached_commit(hub_id, revision) is not None


def cached_commit(hub_id: str, revision: str | None) -> str | None:
    """The commit of the cached snapshot a hub model loads from (its config's `snapshots/<commit>/`), or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    return Path(found).parent.name if isinstance(found, str) else None


def fetch(cfg: Mapping, dry_run: bool = False) -> list[dict]:
    """Download `needs(cfg)` into the cache; one record per item (what `prefetch.json` holds)."""
    items = needs(cfg)
    if dry_run:
        return items
    from huggingface_hub import snapshot_download
    from tqdm import tqdm

    from grape import bench_data

    records = []
    for item in tqdm(items, desc="prefetch", unit=" repos"):
        if item["kind"] == "benchmark":  # loaded as lm-eval loads it, into the datasets cache jobs read offline
            records.append(bench_data.fetch(item))
            continue
        if item["kind"] == "download":  # one file from a URL (a benchmark with no hub copy: LeetCode)
            records.append(bench_data.download(item["name"], {"url": item["id"], "sha256": item["sha256"]}))
            continue
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
                "files": {str(p.relative_to(folder)): sha256_path(p) for p in files},
            }
        )
    return records
