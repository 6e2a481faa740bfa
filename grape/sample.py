"""The `sample` stage: n candidate responses per instruction from one source model (transformers, CPU/GPU).

Instruct models are prompted through their chat template; base models with the plain
Question/Answer template and stop strings. Every row records the sampling parameters that made it.
"""

from __future__ import annotations

import math
from typing import Mapping

from tqdm import tqdm

from grape.data import TRAIN_SPEC
from grape.io import read_jsonl, write_jsonl
from grape.template import Template


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Truncate at the earliest stop string; returns (text, whether a stop string was found)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def build_prompt(tokenizer, template: Template, prompt_format: str, instruction: str) -> str:
    if prompt_format == "chat":
        if not tokenizer.chat_template:
            raise ValueError("prompt_format 'chat' needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                             add_generation_prompt=True)
    return template.render_prompt(instruction)


def run(params: Mapping, model_dir: str, train_path: str, out: str) -> dict:
    import torch

    from grape import models, runtime

    runtime.setup(params["threads"])
    s, source = params["sample"], params["source"]
    template = Template.from_config(params["template"])
    rows = read_jsonl(train_path, TRAIN_SPEC, unique="id")
    tok = models.load_tokenizer(model_dir, padding_side="left")
    model = models.load_model(model_dir)
    add_special = params["prompt_format"] != "chat"  # chat templates already contain BOS
    sampling = {"temperature": s["temperature"], "top_p": s["top_p"], "max_new_tokens": s["max_new_tokens"],
                "n": s["n"], "seed": params["seed"], "prompt_format": params["prompt_format"]}
    out_rows, finished = [], {"stop": 0, "length": 0, "eos": 0}
    n_batches = math.ceil(len(rows) / s["batch_size"])
    for b in tqdm(range(n_batches), desc=f"sample {source}", unit="batch"):
        batch = rows[b * s["batch_size"]:(b + 1) * s["batch_size"]]
        prompts = [build_prompt(tok, template, params["prompt_format"], r["instruction"]) for r in batch]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(model.device)
        # Seed per batch so a rerun with the same config regenerates the same candidates.
        torch.manual_seed(params["seed"] * 1_000_003 + b)
        with torch.inference_mode():
            gen = model.generate(**enc, do_sample=True, temperature=s["temperature"], top_p=s["top_p"],
                                 max_new_tokens=s["max_new_tokens"], num_return_sequences=s["n"],
                                 stop_strings=s["stop"] or None, tokenizer=tok, pad_token_id=tok.pad_token_id)
        new = gen[:, enc["input_ids"].shape[1]:]
        for j, ids in enumerate(new):
            row, k = batch[j // s["n"]], j % s["n"]
            ids = ids[ids != tok.pad_token_id] if tok.pad_token_id != tok.eos_token_id else ids
            hit_eos = bool((ids == tok.eos_token_id).any())
            text = tok.decode(ids, skip_special_tokens=True)
            text, stopped = cut_at_stop(text, s["stop"])
            finish = "stop" if stopped else ("eos" if hit_eos else "length")
            finished[finish] += 1
            out_rows.append({
                "candidate_id": f"{row['id']}:{source}:{k}", "instruction_id": row["id"],
                "instruction": row["instruction"], "response": text.strip(), "source": source,
                "sample_index": k, "answer": row["answer"], "finish": finish, "sampling": sampling,
            })
    write_jsonl(out, out_rows)
    return {"candidates": len(out_rows), **{f"finish_{k}": v for k, v in finished.items()}}
