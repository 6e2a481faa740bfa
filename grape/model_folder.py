"""A model folder: what the `model` stage writes and every model-using stage loads.

A folder holds either the weights (safetensors + tokenizer) or only `grape_model.json` pointing at a hub id
or local path (`kind: hf`). The manifest also says whether remote code is trusted (off unless a model config
asks) and how the model is prompted. Weights load as safetensors only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

MANIFEST = "grape_model.json"


def write_manifest(folder: str | Path, manifest: Mapping) -> None:
    (Path(folder) / MANIFEST).write_text(json.dumps(dict(manifest), indent=2) + "\n")


def resolve(folder: str | Path) -> tuple[str, dict]:
    """Where to load a model folder's weights from, and its manifest (plain HF folders work too)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    return manifest.get("path", str(folder)), manifest


def context_length(folder: str | Path) -> int | None:
    """The model's trained context (max_position_embeddings) from its config.json, when the folder has one."""
    path, _ = resolve(folder)
    config = Path(path) / "config.json"
    if not config.exists():
        return None
    cfg = json.loads(config.read_text())
    value = cfg.get("max_position_embeddings") or cfg.get("text_config", {}).get("max_position_embeddings")
    return int(value) if value else None


def load_tokenizer(folder: str | Path, padding_side: str = "right"):
    from transformers import AutoTokenizer

    path, manifest = resolve(folder)
    tok = AutoTokenizer.from_pretrained(
        path, revision=manifest.get("revision"), trust_remote_code=manifest.get("trust_remote_code", False)
    )
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(folder: str | Path, dtype=None, device: str | None = None, head: str = "causal_lm", **from_pretrained):
    """The folder's model in `dtype` (the one dtype rule by default) on `device`: a causal LM, or with `head="reward"`
    a sequence-classification model (a reward model); `from_pretrained`: further arguments for transformers (e.g.
    `attn_implementation`)."""
    import transformers

    from grape import runtime

    path, manifest = resolve(folder)
    device = device or runtime.device()
    auto = transformers.AutoModelForSequenceClassification if head == "reward" else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(
        path,
        revision=manifest.get("revision"),
        dtype=dtype or runtime.dtype_for(device),
        use_safetensors=True,
        trust_remote_code=manifest.get("trust_remote_code", False),
        **from_pretrained,
    )
    return model.to(device).eval()
