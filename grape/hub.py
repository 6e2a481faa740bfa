"""The hub cache as every stage sees it: whether a path is a hub id or a local file, whether a model is cached, the
message a job gives when something is missing offline, and the download `prefetch` and `grape pick` use. Shared by
`prefetch` (which fetches), `models.hub`, `pick` and `evaluate` (which only look)."""

from __future__ import annotations

import os
from pathlib import Path

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
