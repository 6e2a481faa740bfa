"""`kind: random`: a small randomly initialised Llama and a byte-level BPE tokenizer trained here, for tests.

No weights to fetch: the tokenizer is trained (deterministically) on `grape.word_problems` text, the model is
initialised from `init_seed`. Builds in about a second.
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


def build(cfg: Mapping, out: Path) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tiny_tokenizer(cfg["vocab_size"])
    config = LlamaConfig(
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
        tie_word_embeddings=True,
    )
    torch.manual_seed(cfg["init_seed"])
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {}
