"""The `sft` stage: fine-tune a target on one arm's selection with TRL's SFTTrainer.

Reads: `selections/<target>/<arm>.jsonl` (`grape.contracts.SELECTION`) and the target's model folder.
Writes: `sft/<target>/<arm>/`, a model folder (safetensors, tokenizer, `grape_model.json`) with
`train_log.json` (counts and TRL's log history).

Examples are tokenized by `grape.template.Template.tokenize` (the same split scoring uses) plus EOS,
and handed to TRL pre-tokenized with a `completion_mask`, so the loss covers exactly the response
tokens GRAPE scored (and the EOS). LoRA adapters are merged before saving, so evaluation loads an
ordinary model folder (safetensors). bf16 only on a GPU; on CPU fp32 and no gradient checkpointing
(TRL's CPU defaults are ~8x slower here).
"""

from __future__ import annotations

import json
import math
import tempfile
from typing import Mapping

from grape.contracts import SELECTION
from grape.io import atomic_path, read_jsonl
from grape.provenance import write_meta
from grape.template import Template


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


def run(params: Mapping, model_dir: str, selection_path: str, out: str) -> dict:
    import torch
    from trl import SFTConfig, SFTTrainer

    from grape import model_folder, runtime

    runtime.setup(params["threads"], seed=params["seed"])
    s = params["sft"]
    template = Template.from_config(params["template"])
    rows = read_jsonl(selection_path, SELECTION, non_empty="the select stage's training examples")
    tok = model_folder.load_tokenizer(model_dir)
    model = model_folder.load_model(model_dir, dtype=torch.float32 if runtime.device() == "cpu" else None)
    dataset, stats = build_dataset(tok, template, rows, s["max_length"])
    on_gpu = runtime.device() == "cuda"
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
    steps_per_epoch = math.ceil(len(rows) / (s["batch_size"] * s["grad_accum"]))
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch,
            num_train_epochs=s["epochs"],
            learning_rate=s["lr"],
            per_device_train_batch_size=s["batch_size"],
            gradient_accumulation_steps=s["grad_accum"],
            lr_scheduler_type=s["scheduler"],
            warmup_steps=float(s["warmup_ratio"]),
            max_length=s["max_length"],
            completion_only_loss=True,
            packing=False,
            bf16=on_gpu,
            fp16=False,
            use_cpu=not on_gpu,
            gradient_checkpointing=False,
            seed=params["seed"],
            data_seed=params["seed"],
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=False,
            dataloader_num_workers=0,
        )
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=peft_config
        )
        result = trainer.train()
        history = [h for h in trainer.state.log_history if "loss" in h]
    trained = trainer.model
    if peft_config is not None:
        trained = trained.merge_and_unload()
    trained = trained.to(torch.float32) if not on_gpu else trained
    _, manifest = model_folder.resolve(model_dir)
    counts = {
        **stats,
        "steps": trainer.state.global_step,
        "steps_per_epoch": steps_per_epoch,
        "train_loss": result.training_loss,
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
    }
    with atomic_path(out, directory=True) as tmp:
        trained.save_pretrained(tmp, safe_serialization=True)
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
        (tmp / "train_log.json").write_text(json.dumps({"counts": counts, "log_history": history}, indent=2))
        write_meta(tmp, "sft", params, {"model": model_dir, "selection": selection_path}, counts)
    return counts
