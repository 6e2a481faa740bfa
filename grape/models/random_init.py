"""`kind: random`: a small randomly initialised model and a byte-level BPE tokenizer trained here, for tests.

No weights to fetch: the tokenizer is trained (deterministically) on `grape.word_problems` text, the model is
initialised from `init_seed`. Builds in about a second. `architecture` is one of the paper's target families, each
with what sets it apart, so a family-specific break shows up on CPU:
- `llama` (Llama-3.x): tied embeddings here (as Llama-3.2), no biases;
- `mistral` (Mistral-7B-v0.3): untied embeddings, a sliding-window attention setting;
- `qwen2` (Qwen2.5): biases on the q/k/v projections, tied embeddings (as the small Qwen2.5 models);
- `mixtral` (Mixtral-8x7B, a source in the paper): a tiny mixture of experts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from grape.word_problems import demo_splits


def train_tiny_tokenizer(vocab_size: int, seed: int = 0):
    """A byte-level BPE tokenizer trained on demo problems (deterministic), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    train, test = demo_splits(400, 0, 2, seed)
    corpus = [f"Question: {r['instruction']}\nAnswer: {r['response']}" for r in train]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(corpus, trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    tk.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


ARCHITECTURES = {  # architecture -> (config class, model class, what sets the family apart)
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"tie_word_embeddings": False, "sliding_window": 64}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    # Mixtral-8x7B (a source): a mixture of experts, 2 experts of which 1 routes each token
    "mixtral": (
        "MixtralConfig",
        "MixtralForCausalLM",
        {"tie_word_embeddings": False, "num_local_experts": 2, "num_experts_per_tok": 1},
    ),
}
# `prompt_format: chat` (an instruct source): a minimal chat template, so chat prompting runs as with a real one
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


def build(cfg: Mapping, out: Path, experiment: str | None = None) -> dict:
    import torch
    import transformers

    arch = cfg.get("architecture", "llama")
    config_cls, model_cls, extra = ARCHITECTURES[arch]
    tok = train_tiny_tokenizer(cfg["vocab_size"])
    if cfg.get("prompt_format") == "chat":
        tok.chat_template = CHAT_TEMPLATE
    config = getattr(transformers, config_cls)(
        vocab_size=len(tok),
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"],
        num_key_value_heads=cfg["num_heads"],
        intermediate_size=cfg["intermediate_size"],
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **extra,
    )
    torch.manual_seed(cfg["init_seed"])
    if cfg.get("head") == "reward":  # a reward model: one score per sequence (AutoModelForSequenceClassification)
        model_cls, config.num_labels = model_cls.replace("CausalLM", "SequenceClassification"), 1
    model = getattr(transformers, model_cls)(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {"head": cfg.get("head") or "causal_lm"}
