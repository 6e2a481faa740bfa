"""`snakemake prefetch` / `grape prefetch`: everything an experiment downloads, fetched ahead, on a login node.

Cluster compute nodes usually have no internet, and every other job of the suite runs offline
(`grape.runtime.OFFLINE_ENV`). So before a cluster run, on a machine with internet:

    snakemake prefetch --config experiment=ultrainteract     # or: grape prefetch --experiment ultrainteract

downloads every hub model and dataset the experiment names (`needs`), and every dataset its benchmarks read
(`grape.evaluate.bench_data`: all subsets and few-shot splits), into the cache (`cache_dir` in the config,
HF_HOME-style; Hugging Face's default cache when null), at the pinned revision when one is given, and writes
`results/<name>/prefetch.json`: for each, the hub id, the revision asked for, the commit it resolved to, and the
sha256 of every file fetched. Models fetch their safetensors weights, configs and tokenizer files only (weights
load as safetensors; no pickled `.bin`). `--dry-run` lists what would be fetched without any network.

Jobs that then find something missing stop at once, naming it and this command (`grape.hub.missing_message`). A
path that looks local (`grape.hub.looks_local`) and does not exist is a missing file, never a hub id to fetch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from grape.hub import MODEL_FILES, is_hub_id, looks_local
from grape.provenance import sha256_path


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
    from grape import plugins

    e = cfg["evaluate"]
    for n in e["tasks"]:  # what a runner fetches of its own (AlpacaEval 2: the reference and GLM files)
        runner = None if n == "local" else plugins.benchmark_runner(e["benchmarks"][n])
        out += runner.needs(n, e["benchmarks"][n]) if runner is not None and hasattr(runner, "needs") else []
    return out + benchmark_needs(e)


def benchmark_needs(e: Mapping) -> list[dict]:
    """Every hub dataset (and config) the lm-eval benchmarks of `evaluate.tasks` read (`grape.evaluate.bench_data`): all
    subsets and few-shot splits, as lm-eval loads them; local copies are not fetched."""
    from grape import plugins
    from grape.evaluate import bench_data

    run = [n for n in e["tasks"] if n != "local" and hasattr(plugins.benchmark_runner(e["benchmarks"][n]), "reads")]
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


def fetch(cfg: Mapping, dry_run: bool = False) -> list[dict]:
    """Download `needs(cfg)` into the cache; one record per item (what `prefetch.json` holds)."""
    items = needs(cfg)
    if dry_run:
        return items
    from huggingface_hub import snapshot_download
    from tqdm import tqdm

    from grape.evaluate import bench_data

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
