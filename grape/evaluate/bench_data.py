"""What each benchmark reads: fetched ahead by `prefetch`, checked by every evaluate job before it loads a model.

A benchmark is an lm-eval task or group; what it reads is the dataset (hub id, or a loader such as `json` with its
files) and config name of every leaf task, found through lm-eval's own task index (`TaskManager.task_index`,
groups and tags expanded: mmlu's 57 subjects, hendrycks_math's 7, bbh's 27), so the list follows the installed
lm-eval, not a copy of it. A benchmark pointed at a local copy (`dataset`, `package_file`) reads that copy.

On an offline node a hub dataset loads only from the datasets cache a previous `load_dataset` filled; `prefetch`
fills it with the very call lm-eval makes (`datasets.load_dataset(path, name)`), and `missing` asks the same
library, offline, whether each one would load, so an evaluate job stops in seconds naming the dataset and the
prefetch command instead of after loading a 7B model (issue: `Couldn't reach 'qintongli/GSM-Plus'`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Mapping

# dataset_path values that are datasets' packaged loaders of local files, not hub ids
LOADERS = ("json", "csv", "parquet", "text", "arrow")


TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"  # our task YAMLs (`--include_path`)


def task_manager(extra: list[str] | None = None, defaults: bool = True):
    """lm-eval's task index with our tasks (and `extra` folders), built once per process. `defaults`: with lm-eval's
    own tasks too (it reads ~10K YAMLs, ~8 s); a job whose benchmarks are all ours (`grape_*`) skips them."""
    return _index(tuple(extra or ()), defaults)


@lru_cache(maxsize=4)
def _index(extra: tuple[str, ...], defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(TASKS_DIR), *extra], include_defaults=defaults)


def hf_home(cache_dir: str | None = None) -> str:
    """The cache every job reads: `cache_dir` (the config's, exported as HF_HOME by the workflow), else HF_HOME, else
    Hugging Face's default (huggingface_hub's own rule, without importing it: the workflow's parse stays light)."""
    if cache_dir:
        return os.path.abspath(cache_dir)
    default = os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.expanduser(os.environ.get("HF_HOME") or default)


def download_path(url: str, cache_dir: str | None = None) -> Path:
    """Where `prefetch` puts a benchmark's `download` file: in the cache every job reads (`hf_home`), under a folder
    named for the URL, so another URL is another file and jobs on other nodes find it."""
    import hashlib

    name = url.rstrip("/").rsplit("/", 1)[-1] or "data"
    return Path(hf_home(cache_dir)) / "grape_downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def _package_file(name: str, spec: str) -> Path:
    import importlib.util

    package, _, rel = spec.partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ImportError(f"evaluate.benchmarks.{name}.package_file: package {package!r} is not installed")
    return Path(list(found.submodule_search_locations)[0]) / rel


def files_read(name: str, b: Mapping, cache_dir: str | None = None) -> list[str]:
    """Every local file benchmark `name` reads, as the workflow's inputs of its evaluate jobs (editing one reruns
    exactly them): its dataset's `data_files`, a `package_file` resolved to its path, a prefetched `download`, and
    AlpacaEval's `reference` and `glm_data`. Only files that exist: a missing one is the job's own error to name."""
    paths: list = []
    files = ((b.get("dataset") or {}).get("dataset_kwargs") or {}).get("data_files")
    for f in files.values() if isinstance(files, Mapping) else [files]:
        paths += f if isinstance(f, (list, tuple)) else [f]
    if b.get("package_file"):
        try:
            paths.append(_package_file(name, b["package_file"]))
        except ImportError:
            pass
    if b.get("download"):
        paths.append(download_path(b["download"]["url"], cache_dir))
    paths += [b.get("reference"), b.get("glm_data")]
    return sorted({str(p) for p in paths if p and os.path.isfile(str(p))})


def download(name: str, spec: Mapping) -> dict:
    """Fetch a benchmark's `download` file ({url, sha256}) into `download_path`, written whole or not at all; its
    record for `prefetch.json`. A sha256 in the config must match (else the file is refused and not kept); without
    one the file's hash is recorded here and the URL should pin a commit (then its bytes cannot change)."""
    import shutil
    import urllib.request

    from grape.io import atomic_path
    from grape.provenance import sha256_path

    path = download_path(spec["url"])
    if not (path.exists() and spec["sha256"] in (None, sha256_path(path))):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with urllib.request.urlopen(spec["url"], timeout=120) as r, open(tmp, "wb") as fh:
                shutil.copyfileobj(r, fh)
            got = sha256_path(tmp)
            if spec["sha256"] and got != spec["sha256"]:
                raise ValueError(
                    f"evaluate.benchmarks.{name}.download: {spec['url']} has sha256 {got}, the config pins "
                    f"{spec['sha256']}; not kept"
                )
    return {"kind": "download", "name": name, "id": spec["url"], "path": str(path), "sha256": sha256_path(path)}


def local_copy(name: str, b: Mapping) -> dict:
    """Dataset settings that point one benchmark's task at a local copy (`package_file`, `dataset`, or the file a
    `download` fetched; a pinned sha256 is checked each time)."""
    over = {}
    if b.get("download"):
        from grape.provenance import sha256_path

        path = download_path(b["download"]["url"])
        pinned = b["download"]["sha256"]
        if pinned and path.exists() and sha256_path(path) != pinned:
            raise ValueError(f"evaluate.benchmarks.{name}.download: {path} does not have the pinned sha256 {pinned}")
        over.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {"test": str(path)}})
    if b.get("package_file"):
        path = _package_file(name, b["package_file"])
        if not path.is_file():
            raise OSError(f"evaluate.benchmarks.{name}.package_file: {path} does not exist")
        over.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {"test": str(path)}})
    if b.get("dataset"):
        over.update(b["dataset"])
    return over


def _leaves(tm, task: str, seen: set[str]) -> list[Mapping]:
    """The configs of the leaf tasks of an lm-eval task, group or tag."""
    entry = tm.task_index.get(task)
    if entry is None:
        raise ValueError(f"lm-eval knows no task, group or tag {task!r}")
    kind = entry.kind.name
    if kind == "TASK":
        return [entry.cfg]
    members = entry.cfg["task"] if kind == "GROUP" else sorted(entry.tags)
    out: list[Mapping] = []
    for sub in members if isinstance(members, list) else [members]:
        if isinstance(sub, str):
            if sub not in seen:
                seen.add(sub)
                out += _leaves(tm, sub, seen)
        else:  # an inline task of a group
            out.append(sub)
    return out


def reads(tm, name: str, bench: Mapping, overrides: Mapping) -> list[dict]:
    """The datasets benchmark `name` reads, one item per (dataset, config): {benchmark, id, config, files}.
    `overrides`: the local copy the benchmark is pointed at (grape.evaluate's `dataset`/`package_file`), if any."""
    cfgs = [dict(overrides)] if overrides else _leaves(tm, bench["task"], set())
    out, seen = [], set()
    for cfg in cfgs:
        kwargs = {k: v for k, v in (cfg.get("dataset_kwargs") or {}).items() if k != "data_files"}
        files = (cfg.get("dataset_kwargs") or {}).get("data_files")
        files = sorted(files.values() if isinstance(files, dict) else [files] if files else [])
        key = (cfg.get("dataset_path"), cfg.get("dataset_name"), tuple(map(str, files)))
        if key[0] is None or key in seen:
            continue
        seen.add(key)
        item = {"benchmark": name, "id": key[0], "config": key[1], "files": [str(f) for f in files]}
        out.append({**item, **({"kwargs": kwargs} if kwargs else {})})  # e.g. data_dir: loaded as lm-eval loads it
    return out


def is_local(item: Mapping) -> bool:
    return item["id"] in LOADERS or os.path.exists(item["id"])


def missing(items: list[Mapping]) -> list[str]:
    """What of `items` would not load offline, each said as `benchmark: dataset (config)`; asks `datasets` itself
    (offline, no data read): a hub dataset is available when its prepared cache is there."""
    import datasets

    from grape import runtime

    runtime.set_offline()
    out = []
    for it in items:
        what = f"{it['benchmark']}: {it['id']}" + (f" ({it['config']})" if it.get("config") else "")
        if it["id"] in LOADERS:
            gone = [f for f in it["files"] if not Path(f).exists()]
            if gone:
                out.append(f"{what}: file not found {gone[0]}")
            continue
        if os.path.exists(it["id"]):
            continue
        try:
            builder = datasets.load_dataset_builder(it["id"], it.get("config"), **it.get("kwargs", {}))
            ready = Path(builder.cache_dir).is_dir()
        except Exception:  # ConnectionError (OfflineModeIsEnabled), FileNotFoundError: not in the cache
            ready = False
        if not ready:
            out.append(what)
    return out


def fetch(item: Mapping) -> dict:
    """Load one benchmark dataset as lm-eval will (filling the datasets cache); its record for `prefetch.json`:
    the commit the hub resolved and the sha256 of every cached file."""
    import datasets
    from huggingface_hub import HfApi

    from grape.provenance import sha256_path

    builder = datasets.load_dataset_builder(item["id"], item.get("config"), **item.get("kwargs", {}))
    builder.download_and_prepare()
    cache = Path(builder.cache_dir)
    try:
        commit = HfApi().dataset_info(item["id"]).sha
    except Exception:  # the hub unreachable after the download: the files' hashes still pin what was fetched
        commit = None
    files = {str(p.relative_to(cache)): sha256_path(p) for p in sorted(cache.rglob("*")) if p.is_file()}
    return {**item, "commit": commit, "files": files}
