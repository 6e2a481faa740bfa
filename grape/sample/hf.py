"""`sample.backend: hf`: transformers `generate` on the local device (CPU or one GPU), batch by batch.

Each batch is seeded from the experiment seed and its index, so a rerun with the same config regenerates
the same candidates.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping

from tqdm import tqdm

from grape.sample.prompts import build_prompt, cut_at_stop
from grape.template import Template


def generate(params: Mapping, model_dir: str, rows: list[dict]) -> Iterator[tuple[dict, int, str, str]]:
    """Yield (instruction row, sample index, text, finish reason) for every row x sample, in order."""
    import torch

    from grape import model_folder, runtime

    runtime.setup(params["threads"])
    s, source = params["sample"], params["source"]
    template = Template.from_config(params["template"])
    tok = model_folder.load_tokenizer(model_dir, padding_side="left")
    model = model_folder.load_model(model_dir)
    add_special = params["prompt_format"] != "chat"  # chat templates already contain BOS
    n_batches = math.ceil(len(rows) / s["batch_size"])
    for b in tqdm(range(n_batches), desc=f"sample {source}", unit="batch"):
        batch = rows[b * s["batch_size"] : (b + 1) * s["batch_size"]]
        prompts = [build_prompt(tok, template, params["prompt_format"], r["instruction"]) for r in batch]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(model.device)
        # Seed per batch so a rerun with the same config regenerates the same candidates.
        torch.manual_seed(params["seed"] * 1_000_003 + b)
        with torch.inference_mode():
            gen = model.generate(
                **enc,
                do_sample=True,
                temperature=s["temperature"],
                top_p=s["top_p"],
                max_new_tokens=s["max_new_tokens"],
                num_return_sequences=s["n"],
                stop_strings=s["stop"] or None,
                tokenizer=tok,
                pad_token_id=tok.pad_token_id,
            )
        new = gen[:, enc["input_ids"].shape[1] :]
        for j, ids in enumerate(new):
            ids = ids[ids != tok.pad_token_id] if tok.pad_token_id != tok.eos_token_id else ids
            hit_eos = bool((ids == tok.eos_token_id).any())
            text, stopped = cut_at_stop(tok.decode(ids, skip_special_tokens=True), s["stop"])
            yield batch[j // s["n"]], j % s["n"], text.strip(), "stop" if stopped else ("eos" if hit_eos else "length")
