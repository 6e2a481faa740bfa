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
- Global batch: `sft.global_batch` examples per optimizer step whatever the number of processes.
- Padding-free (`sft.padding_free`, on by default): each step is cut into micro-batches by `grape.sft.batches`,
  `sft.batch_size` examples each, or as many as fit `sft.micro_batch_tokens` tokens (what keeps a GPU busy), each
  micro-batch one sequence with position ids restarting per example; transformers builds the document mask from
  them for whatever attention runs (sdpa, flex attention's block mask, flash attention's varlen kernels), so no
  example sees another (tests/test_sft.py: per-example losses, and whole runs, equal to the padded path's).
  Padded (`padding_free: false`): TRL's padded batches of `sft.batch_size` examples, accumulation derived.
  A global batch the micro-batches cannot reach exactly is an error that says which numbers divide it.
- Checkpoints (`sft.save_steps` > 0): saved into `<output>.checkpoints/` beside the output; a rerun of a killed job
  resumes from the last one (same data order, same final step count); removed once the model is written unless
  `sft.keep_checkpoints`.
- dtype: `grape.runtime.choose_dtype` (bf16 on a GPU and on CPUs with AMX/AVX512-BF16, else fp32), recorded with
  its reason. Attention `auto`: on a GPU flash-attention-2 when installed, else flex attention for padding-free
  micro-batches (a block mask, no dense one, no per-length re-planning) and sdpa for padded ones; sdpa on CPU.
  Gradient checkpointing `auto`: on a GPU only when the step would not fit without it
  (`grape.sft.batches.checkpointing`, its estimate recorded); off on CPU.
- Measured: every optimizer step's real tokens, seconds, tokens/s, TFLOP/s and MFU against a matmul peak measured
  in the same job (`train_log.json` `steps` and `throughput`).
- Several processes: the rule launches `accelerate launch` (config/accelerate/<sft.accelerate>.yaml: ddp, fsdp2,
  deepspeed_zero3) with the job's GPU count; one process runs the same code without it. Only the main process
  writes the output.
LoRA adapters (`sft.method: lora`) are merged before saving, so evaluation loads an ordinary model folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Mapping

from grape.contracts import SELECTION
from grape.io import atomic_path, read_jsonl
from grape.provenance import write_meta
from grape.sft.batches import accumulation
from grape.sft.settings import SFTSettings
from grape.template import Template

# bump when a change to training alters the model written (checkpoints then start over); 2: grape.sft.batches
CODE_VERSION = 2


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


def world_size() -> int:
    """Processes of this training run (accelerate / torchrun set WORLD_SIZE; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def attention(s: SFTSettings, dev: str) -> str:
    """The attention implementation: the config's, or for `auto` the fastest that keeps examples apart here."""
    if s.attn_implementation != "auto":
        return s.attn_implementation
    if dev != "cuda":
        return "sdpa"
    try:
        import flash_attn  # noqa: F401

        return "flash_attention_2"
    except ImportError:
        return "flex_attention" if s.padding_free else "sdpa"


def recipe(s: SFTSettings | Mapping, dev: str, processes: int) -> dict:
    """Every choice the trainer gets that does not depend on the model or the data, resolved for this device and
    process count (written to train_log.json; `run` adds the micro-batch plan and gradient checkpointing)."""
    from grape import runtime

    s = s if isinstance(s, SFTSettings) else SFTSettings.from_config(s)  # its cross-field checks included
    dtype, why = runtime.choose_dtype(s.dtype, dev)
    return {
        "processes": processes,
        "global_batch": s.global_batch,
        "micro_batch": s.batch_size,
        "micro_batch_tokens": s.micro_batch_tokens,
        "grad_accum": None if s.padding_free else accumulation(s.global_batch, s.batch_size, processes),
        "dtype": dtype,
        "dtype_reason": why,
        "attn_implementation": attention(s, dev),
        "padding_free": bool(s.padding_free),
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
    from grape.sft import batches as sft_batches

    runtime.setup(params["threads"], seed=params["seed"])
    s = SFTSettings.from_config(params["sft"])
    dev = runtime.device()
    plan = recipe(s, dev, world_size())
    template = Template.from_config(params["template"])
    rows = read_jsonl(selection_path, SELECTION, non_empty="the select stage's training examples")
    tok = model_folder.load_tokenizer(model_dir)
    # fp32 master weights on the CPU (the trainer places them); bf16 runs as autocast (TRL's bf16=True)
    model = model_folder.load_model(
        model_dir, dtype=torch.float32, device="cpu", attn_implementation=plan["attn_implementation"]
    )
    dataset, stats = build_dataset(tok, template, rows, s.max_length)
    micro = None
    if plan["padding_free"]:
        lengths = [len(x) for x in dataset["input_ids"]]
        micro, plan["grad_accum"], steps = sft_batches.plan(
            lengths,
            s.global_batch,
            plan["processes"],
            s.epochs,
            params["seed"],
            examples_per_micro=None if s.micro_batch_tokens else s.batch_size,
            tokens_per_micro=s.micro_batch_tokens,
        )
        heaviest = max(sum(lengths[i] for i in m) for m in micro)
        plan["micro_batches"] = {
            "per_step": plan["grad_accum"] * plan["processes"],
            "max_tokens": heaviest,
            "mean_tokens": round(sum(lengths[i] for st in steps for i in st) / max(1, len(micro)), 1),
            "empty": sum(1 for m in micro if not m),
        }
    else:
        heaviest = s.batch_size * max(len(x) for x in dataset["input_ids"])
    shape = sft_batches.model_shape(model)
    plan["gradient_checkpointing"], plan["gradient_checkpointing_reason"] = sft_batches.checkpointing(
        s.gradient_checkpointing,
        dev,
        shape,
        model.config.hidden_size,
        model.config.vocab_size,
        heaviest,
        s.method == "full",
        plan["processes"] if s.accelerate in ("fsdp2", "deepspeed_zero3") else 1,
        torch.cuda.get_device_properties(0).total_memory if dev == "cuda" else None,
    )
    model.config.use_cache = False  # training: no KV cache, so transformers derives the document mask from positions
    peft_config = None
    if s.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=s.lora_r,
            lora_alpha=s.lora_alpha,
            lora_dropout=s.lora_dropout,
            target_modules=list(s.lora_targets),
            task_type="CAUSAL_LM",
        )
    ckpt = checkpoint_dir(out)
    save_steps = s.save_steps
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
    report_to = _report_to(s.report_to, ckpt)
    args = SFTConfig(
        output_dir=str(ckpt),
        num_train_epochs=1 if micro is not None else s.epochs,  # the plan holds every epoch's steps
        learning_rate=s.lr,
        per_device_train_batch_size=1 if micro is not None else plan["micro_batch"],
        gradient_accumulation_steps=plan["grad_accum"],
        lr_scheduler_type=s.scheduler,
        optim=s.optim,
        warmup_steps=float(s.warmup_ratio),
        max_length=s.max_length,
        completion_only_loss=True,
        packing=False,
        padding_free=False,  # ours: grape.sft.batches, for every attention implementation
        train_sampling_strategy="sequential" if micro is not None else "random",
        remove_unused_columns=micro is None,
        dataset_kwargs={"skip_prepare_dataset": True} if micro is not None else None,
        bf16=plan["dtype"] == "bfloat16",
        fp16=False,
        use_cpu=dev != "cuda",
        gradient_checkpointing=plan["gradient_checkpointing"],
        seed=params["seed"],
        data_seed=params["seed"],
        report_to=report_to,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_only_model=False,
        logging_steps=1,
        disable_tqdm=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False if plan["processes"] > 1 else None,
    )
    collator = None  # padded: TRL's, wrapped below to pass the lengths on
    if micro is not None:
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        collator = sft_batches.PackedCollator(dataset, pad)
    tally = sft_batches.Tally()
    trainer = sft_batches.counting(SFTTrainer, tally)(
        model=model,
        args=args,
        train_dataset=sft_batches.micro_batches(micro) if micro is not None else dataset,
        processing_class=tok,
        peft_config=peft_config,
        data_collator=collator,
    )
    if collator is None:
        trainer.data_collator = sft_batches.LengthsCollator(trainer.data_collator)
    peak = runtime.matmul_peak(dev, getattr(torch, plan["dtype"]))
    planned = None
    if micro is not None:
        planned = [(sum(lengths[i] for i in st), sum(lengths[i] ** 2 for i in st)) for st in steps]
    meter = sft_batches.step_meter(tally, shape, peak, plan["processes"], dev, planned)
    trainer.add_callback(meter)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    train_seconds = time.perf_counter() - t0
    model.config.use_cache = True  # the saved model generates with a cache
    history = [h for h in trainer.state.log_history if "loss" in h]
    counts = {
        **stats,
        "steps": trainer.state.global_step,
        "steps_per_epoch": math.ceil(len(rows) / plan["global_batch"]),
        "resumed_from": Path(last).name if last else None,
        "checkpoint_set_aside": job.status["set_aside"],
        "train_loss": result.training_loss,
        "train_seconds": round(train_seconds, 2),
        "trained_tokens": sum(m["tokens"] for m in meter.steps),
        "tokens_per_s": round(sum(m["tokens"] for m in meter.steps) / train_seconds, 1),
        "max_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev == "cuda" else None,
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
    }
    throughput = {**sft_batches.summary(meter.steps, peak), "steps": meter.steps}
    # every process takes part in gathering the weights (sharded under FSDP / ZeRO-3); only the main one writes
    state = None if peft_config is not None else trainer.accelerator.get_state_dict(trainer.model)
    if trainer.accelerator.is_main_process:
        _save(trainer, tok, state, params, model_dir, selection_path, out, plan, counts, history, throughput)
        if not s.keep_checkpoints:
            job.clear()
    trainer.accelerator.wait_for_everyone()
    return {**counts, "dtype": plan["dtype"], "dtype_reason": plan["dtype_reason"], "grad_accum": plan["grad_accum"]}


def _report_to(kind: str, ckpt: Path) -> list[str]:
    """Live training curves (`sft.report_to`): TensorBoard event files in `<output>.checkpoints/tensorboard` while the
    job runs (`tensorboard --logdir results/<name>/sft`), kept in the model folder afterwards; wandb in its offline
    mode unless WANDB_MODE says otherwise, its run under the checkpoint folder; none."""
    if kind == "none":
        return []
    import importlib.util

    need = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}[kind]
    if not any(importlib.util.find_spec(m) for m in need):
        raise ValueError(
            f"sft.report_to is {kind!r} but {need[0]!r} is not installed: pip install {need[0]}, or sft.report_to: none"
        )
    if kind == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(ckpt / "tensorboard")
    else:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(ckpt))
    return [kind]


def _save(trainer, tok, state, params, model_dir, selection_path, out, plan, counts, history, throughput) -> None:
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
        log = {"counts": counts, "recipe": dict(plan), "throughput": throughput, "log_history": history}
        (tmp / "train_log.json").write_text(json.dumps(log, indent=2))
        events = checkpoint_dir(out) / "tensorboard"
        if events.is_dir():  # the curves, kept beside the model they trained
            shutil.copytree(events, tmp / "tensorboard")
        write_meta(tmp, "sft", params, {"model": model_dir, "selection": selection_path}, {**counts, **plan})
