"""The `sft` stage: fine-tune a target on one arm's selection with TRL's SFTTrainer.

Reads: `selections/<target>/<arm>.jsonl` (`grape.contracts.SELECTION`) and the target's model folder.
Writes: `sft/<target>/<arm>/`, a model folder (safetensors, tokenizer, `grape_model.json`) with `train_log.json`
(counts, the recipe as run, TRL's log history).

The recipe (`sft` in the config; the paper's in config/experiment/ultrainteract.yaml and tulu3.yaml):
- Loss on response tokens only: examples are tokenized by `grape.template.Template.tokenize_rendered` (the same
  `Question:/Answer:` split scoring uses) plus EOS, and handed to TRL pre-tokenized with a `completion_mask`.
  Reduction: TRL's, the mean over every response token of the global batch (tokens summed over the micro-batches
  and processes of one optimizer step, then divided by their count), not a mean of per-sequence means, so long
  responses weigh by their length, as in open-instruct's "sum" loss divided by tokens.
- Global batch: `sft.global_batch` examples per optimizer step whatever the number of processes; the micro-batch
  is `sft.batch_size` per process and gradient accumulation is derived (`accumulation`): global / (micro x
  processes). A global batch those cannot reach exactly is an error that says which numbers divide it.
- Padding-free (`sft.padding_free`, on by default): the examples of a micro-batch are concatenated into one
  sequence with position ids restarting at 0 per example and attention that never crosses an example: TRL's
  padding-free path through flash attention's varlen kernels where flash-attention is installed (GPU), else
  `PaddingFreeCollator`'s block-diagonal mask (sdpa). The micro-batch stays `sft.batch_size` examples, so the global
  batch keeps its meaning. tests/test_sft.py checks padded and padding-free per-example losses agree.
- Checkpoints (`sft.save_steps` > 0): saved into `<output>.checkpoints/` beside the output; a rerun of a killed job
  resumes from the last one (same data order, same final step count); removed once the model is written unless
  `sft.keep_checkpoints`.
- dtype: `grape.runtime.choose_dtype` (bf16 on a GPU and on CPUs with AMX/AVX512-BF16, else fp32), recorded with
  its reason. Gradient checkpointing and the attention implementation: `auto` = on / flash-attention-2 (when
  installed) on a GPU, off / sdpa on CPU.
- Several processes: the rule launches `accelerate launch` (config/accelerate/<sft.accelerate>.yaml: ddp, fsdp2,
  deepspeed_zero3) with the job's GPU count; one process runs the same code without it. Only the main process
  writes the output.
LoRA adapters (`sft.method: lora`) are merged before saving, so evaluation loads an ordinary model folder.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Mapping

from grape.contracts import SELECTION
from grape.io import atomic_path, read_jsonl
from grape.provenance import write_meta
from grape.template import Template

CODE_VERSION = 1  # bump when a change to training alters the model written (checkpoints then start over)


def build_dataset(tokenizer, template: Template, rows: list[dict], max_length: int):
    from datasets import Dataset

    ids, masks, truncated = [], [], 0
    for row in rows:
        p, r = template.tokenize_rendered(tokenizer, row["prompt"], row["completion"], add_eos=True)
        seq, mask = p + r, [0] * len(p) + [1] * len(r)
        if len(seq) > max_length:
            truncated += 1
            seq, mask = seq[:max_length], mask[:max_length]
        ids.append(seq)
        masks.append(mask)
    ds = Dataset.from_dict({"input_ids": ids, "completion_mask": masks})
    stats = {
        "examples": len(ids),
        "tokens": sum(map(len, ids)),
        "response_tokens": sum(map(sum, masks)),
        "truncated_examples": truncated,
    }
    return ds, stats


class PaddingFreeCollator:
    """A micro-batch as one sequence with no padding, each example attending only to itself: position ids restart at
    0 per example and the attention mask is block-diagonal causal (a 4D boolean mask, which sdpa and eager take as
    it is). TRL's own padding-free path leaves the mask out and relies on flash attention's varlen kernels; with sdpa
    that lets examples attend to each other (tests/test_sft.py shows the losses differ), so on CPU this one is used.
    Labels: the response tokens (TRL's `labels`, or `completion_mask`), never the first token of an example."""

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        ids = [torch.as_tensor(e["input_ids"]) for e in examples]
        if "labels" in examples[0]:  # TRL turns completion_mask into labels (-100 outside the response)
            labels = torch.cat([torch.as_tensor(e["labels"]) for e in examples])
        else:
            labels = torch.cat(
                [torch.where(torch.as_tensor(e["completion_mask"]).bool(), x, -100) for x, e in zip(ids, examples)]
            )
        lengths = [len(x) for x in ids]
        position_ids = torch.cat([torch.arange(n) for n in lengths])
        labels[position_ids == 0] = -100
        seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.as_tensor(lengths))
        total = int(sum(lengths))
        causal = torch.ones(total, total, dtype=torch.bool).tril_()
        attention = causal & (seq[:, None] == seq[None, :])
        return {
            "input_ids": torch.cat(ids)[None],
            "labels": labels[None],
            "position_ids": position_ids[None],
            "attention_mask": attention[None, None],
        }


def world_size() -> int:
    """Processes of this training run (accelerate / torchrun set WORLD_SIZE; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def accumulation(global_batch: int, micro_batch: int, processes: int) -> int:
    """Gradient accumulation steps that make `global_batch` from `micro_batch` per process on `processes`."""
    per_step = micro_batch * processes
    if global_batch % per_step:
        fits = [n for n in range(1, global_batch + 1) if global_batch % (micro_batch * n) == 0]
        raise ValueError(
            f"sft.global_batch {global_batch} is not a multiple of sft.batch_size {micro_batch} x {processes} "
            f"processes = {per_step}: no whole number of accumulation steps reaches it; with batch_size "
            f"{micro_batch} use {fits[:8]} processes, or change sft.batch_size / sft.global_batch"
        )
    return global_batch // per_step


def recipe(s: Mapping, dev: str, processes: int) -> dict:
    """Every choice the trainer gets, resolved for this device and process count (written to train_log.json)."""
    from grape import runtime

    dtype, why = runtime.choose_dtype(s["dtype"], dev)
    gc = s["gradient_checkpointing"]
    attn = s["attn_implementation"]
    if attn == "auto":
        attn = "sdpa"
        if dev == "cuda":
            try:
                import flash_attn  # noqa: F401

                attn = "flash_attention_2"
            except ImportError:
                pass
    return {
        "processes": processes,
        "global_batch": s["global_batch"],
        "micro_batch": s["batch_size"],
        "grad_accum": accumulation(s["global_batch"], s["batch_size"], processes),
        "dtype": dtype,
        "dtype_reason": why,
        "gradient_checkpointing": (dev == "cuda") if gc == "auto" else bool(gc),
        "attn_implementation": attn,
        "padding_free": bool(s["padding_free"]),
        "loss": "mean over the response tokens of the global batch (TRL)",
    }


def checkpoint_dir(out: str) -> Path:
    return Path(f"{out}.checkpoints")


def _last_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint: the Trainer writes `trainer_state.json` last, so a job killed while saving
    leaves a folder without it, which is passed over (and written again when training reaches that step)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists() and p.name[11:].isdigit()]
    return str(max(done, key=lambda p: int(p.name[11:]))) if done else None


def run(params: Mapping, model_dir: str, selection_path: str, out: str) -> dict:
    import torch
    from trl import SFTConfig, SFTTrainer

    from grape import model_folder, resume, runtime

    runtime.setup(params["threads"], seed=params["seed"])
    s = params["sft"]
    dev = runtime.device()
    plan = recipe(s, dev, world_size())
    template = Template.from_config(params["template"])
    rows = read_jsonl(selection_path, SELECTION, non_empty="the select stage's training examples")
    tok = model_folder.load_tokenizer(model_dir)
    # fp32 master weights on the CPU (the trainer places them); bf16 runs as autocast (TRL's bf16=True)
    model = model_folder.load_model(
        model_dir, dtype=torch.float32, device="cpu", attn_implementation=plan["attn_implementation"]
    )
    dataset, stats = build_dataset(tok, template, rows, s["max_length"])
    peft_config = None
    if s["method"] == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=s["lora_r"],
            lora_alpha=s["lora_alpha"],
            lora_dropout=s["lora_dropout"],
            target_modules=list(s["lora_targets"]),
            task_type="CAUSAL_LM",
        )
    ckpt = checkpoint_dir(out)
    save_steps = int(s["save_steps"] or 0)
    # the checkpoints are this job's only if this job wrote them: same recipe, selection, model content, processes
    job = resume.Checkpoint(
        [ckpt],
        resume.identity(
            "sft", params, {"selection": selection_path}, {"model": model_dir}, CODE_VERSION, {"plan": plan}
        ),
    )
    if int(os.environ.get("RANK", "0")) == 0:
        job.open()
    else:
        job.wait_for_stamp()
    last = _last_checkpoint(ckpt) if save_steps else None
    args = SFTConfig(
        output_dir=str(ckpt),
        num_train_epochs=s["epochs"],
        learning_rate=s["lr"],
        per_device_train_batch_size=plan["micro_batch"],
        gradient_accumulation_steps=plan["grad_accum"],
        lr_scheduler_type=s["scheduler"],
        optim=s["optim"],
        warmup_steps=float(s["warmup_ratio"]),
        max_length=s["max_length"],
        completion_only_loss=True,
        packing=False,
        padding_free=plan["padding_free"] and plan["attn_implementation"] == "flash_attention_2",
        bf16=plan["dtype"] == "bfloat16",
        fp16=False,
        use_cpu=dev != "cuda",
        gradient_checkpointing=plan["gradient_checkpointing"],
        seed=params["seed"],
        data_seed=params["seed"],
        report_to=[],
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_only_model=False,
        logging_steps=1,
        disable_tqdm=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False if plan["processes"] > 1 else None,
    )
    collator = None  # TRL's: padded batches, or padding-free through flash attention's varlen kernels
    if plan["padding_free"] and plan["attn_implementation"] != "flash_attention_2":
        collator = PaddingFreeCollator()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=peft_config,
        data_collator=collator,
    )
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    train_seconds = time.perf_counter() - t0
    history = [h for h in trainer.state.log_history if "loss" in h]
    counts = {
        **stats,
        "steps": trainer.state.global_step,
        "steps_per_epoch": math.ceil(len(rows) / plan["global_batch"]),
        "resumed_from": Path(last).name if last else None,
        "checkpoint_set_aside": job.status["set_aside"],
        "train_loss": result.training_loss,
        "train_seconds": round(train_seconds, 2),
        "tokens_per_s": round(stats["tokens"] * s["epochs"] / train_seconds, 1) if not last else None,
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
    }
    # every process takes part in gathering the weights (sharded under FSDP / ZeRO-3); only the main one writes
    state = None if peft_config is not None else trainer.accelerator.get_state_dict(trainer.model)
    if trainer.accelerator.is_main_process:
        _save(trainer, tok, state, params, model_dir, selection_path, out, plan, counts, history)
        if not s["keep_checkpoints"]:
            job.clear()
    trainer.accelerator.wait_for_everyone()
    return {**counts, "dtype": plan["dtype"], "dtype_reason": plan["dtype_reason"], "grad_accum": plan["grad_accum"]}


def _save(trainer, tok, state, params, model_dir, selection_path, out, plan, counts, history) -> None:
    """The main process writes the model folder: the gathered full weights (`state`), or the LoRA model merged."""
    import torch

    from grape import model_folder

    trained = trainer.accelerator.unwrap_model(trainer.model)
    if state is None:
        trained = trained.merge_and_unload().to(torch.float32)
        state = trained.state_dict()
    else:
        state = {k: v.to(torch.float32) for k, v in state.items()}
    _, manifest = model_folder.resolve(model_dir)
    with atomic_path(out, directory=True) as tmp:
        trained.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        tok.save_pretrained(tmp)
        model_folder.write_manifest(
            tmp,
            {
                "name": f"{manifest.get('name', 'model')}+{params['arm']}",
                "kind": "finetuned",
                "base": str(model_dir),
                "trust_remote_code": manifest.get("trust_remote_code", False),
                "prompt_format": manifest.get("prompt_format", "plain"),
            },
        )
        log = {"counts": counts, "recipe": dict(plan), "log_history": history}
        (tmp / "train_log.json").write_text(json.dumps(log, indent=2))
        write_meta(tmp, "sft", params, {"model": model_dir, "selection": selection_path}, {**counts, **plan})
