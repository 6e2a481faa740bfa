"""The `sft` stage's settings as one typed object, in the style of TRL's config dataclasses: every field documented
once here, its default here (config/config.yaml holds the same values, tests/test_config.py checks both and the
schema agree), and the checks that involve two fields in `__post_init__`. `grape.config.validate` builds it from the
composed config, so a bad combination stops the workflow at compose time, before any job runs, naming the keys;
the stage reads attributes, never `.get(key) or default`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping

METHODS = ("lora", "full")
STRATEGIES = (None, "ddp", "fsdp2", "deepspeed_zero3")  # config/accelerate/<name>.yaml


@dataclass(frozen=True)
class SFTSettings:
    method: str = "lora"
    """lora (adapters on `lora_targets`, merged before saving) | full (the paper's, very likely)."""
    epochs: float = 1
    """Passes over the selection (the paper: 1)."""
    lr: float = 1.0e-4
    """Peak learning rate (the paper: 1e-5 for full fine-tuning; LoRA wants ~10x more)."""
    batch_size: int = 8
    """Micro-batch per process, in examples (when `micro_batch_tokens` is null)."""
    micro_batch_tokens: int | None = None
    """Padding-free micro-batches of about this many tokens instead (grape/sft/batches.py; needs `padding_free`)."""
    global_batch: int = 8
    """Examples per optimizer step, whatever the process count (the paper: 256)."""
    max_length: int = 256
    """Tokens per example (prompt + response); longer ones are truncated and counted."""
    scheduler: str = "linear"
    """transformers' lr_scheduler_type."""
    warmup_ratio: float = 0.0
    """Share of the steps spent warming up (a float < 1)."""
    optim: str = "adamw_torch"
    """transformers' optimizer name (the paper does not say: AdamW, TRL's default)."""
    padding_free: bool = True
    """A micro-batch as one sequence, attention kept per example (exact; the padded path otherwise)."""
    dtype: str = "auto"
    """auto (bf16 on a GPU and on AMX/AVX512-BF16 CPUs, else fp32) | float32 | bfloat16."""
    gradient_checkpointing: bool | str = "auto"
    """auto: on a GPU only when the step would not fit without it (the estimate is recorded)."""
    attn_implementation: str = "auto"
    """auto: flash_attention_2 when installed on a GPU, else flex_attention (padding-free) or sdpa."""
    report_to: str = "tensorboard"
    """Live curves: tensorboard (events under the checkpoint folder, then the model folder) | wandb | none."""
    save_steps: int = 0
    """Checkpoint every N optimizer steps into <output>.checkpoints (0: none); a rerun resumes from the last."""
    keep_checkpoints: bool = False
    """Keep <output>.checkpoints after the model is written."""
    accelerate: str | None = None
    """Several GPUs: ddp | fsdp2 | deepspeed_zero3 (config/accelerate/<name>.yaml); null: ddp."""
    lora_r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """LoRA's rank, scale, dropout and the modules it adapts (`method: lora`)."""

    def __post_init__(self):
        if self.micro_batch_tokens and not self.padding_free:
            raise ValueError(
                "sft.micro_batch_tokens needs sft.padding_free: true (padded batches count examples, not tokens)"
            )
        if not self.padding_free and self.global_batch % self.batch_size:
            raise ValueError(
                f"sft.global_batch {self.global_batch} is not a multiple of sft.batch_size {self.batch_size}: padded "
                "batches reach the global batch by accumulating whole micro-batches"
            )
        if self.method == "lora" and not self.lora_targets:
            raise ValueError("sft.method lora needs sft.lora_targets (the modules the adapters go on)")
        if self.keep_checkpoints and not self.save_steps:
            raise ValueError("sft.keep_checkpoints is true but sft.save_steps is 0: no checkpoint is written to keep")
        if self.method not in METHODS:
            raise ValueError(f"sft.method must be one of {METHODS}, got {self.method!r}")
        if self.accelerate not in STRATEGIES:
            raise ValueError(f"sft.accelerate must be one of {STRATEGIES}, got {self.accelerate!r}")

    @classmethod
    def from_config(cls, d: Mapping) -> "SFTSettings":
        """From the config's `sft` mapping (the schema has checked each value's type)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown key(s) under sft: {', '.join(unknown)}")
        return cls(**{k: tuple(v) if k == "lora_targets" else v for k, v in d.items()})

    def as_dict(self) -> dict:
        out = asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        return out
