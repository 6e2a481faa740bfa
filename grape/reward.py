"""The `reward` stage: a reward model's score of every pool candidate, for the `reward` arm (the paper's App. B.1:
selection by Skywork-Reward-Llama-3.1-8B-v0.2 instead of the target's likelihood).

Reads: `pool/pool.jsonl` (`grape.contracts.POOL`) and a reward model's folder (a sequence-classification model with
one output: `AutoModelForSequenceClassification`, safetensors only). Writes: `rewards/<model>.jsonl` (`REWARD`), one
row per candidate sorted by candidate_id. Each (instruction, response) is given as the model was trained to read it:
a user turn and an assistant turn through its chat template, or the plain `Question:/Answer:` template where the
tokenizer has none; a text longer than `reward.max_length` tokens keeps its first `max_length` (counted in meta.json
as `truncated`). Batches are formed by length, so padding stays small; the rows written do not depend on it.
"""

from __future__ import annotations

import math
import time
from typing import Mapping

from grape.contracts import POOL
from grape.io import read_jsonl, write_jsonl
from grape.template import Template


def texts(tokenizer, template: Template, rows: list[dict]) -> list[str]:
    """Each candidate as the reward model reads it: its chat template over (user: instruction, assistant: response),
    or the plain template."""
    if getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template(
                [
                    *(r.get("context") or [{"role": "user", "content": r["instruction"]}]),
                    {"role": "assistant", "content": r["response"]},
                ],
                tokenize=False,
            )  # fmt: skip
            for r in rows
        ]
    return [template.render_prompt(r["instruction"]) + template.render_response(r["response"]) for r in rows]


def run(params: Mapping, model_dir: str, pool_path: str, out: str) -> dict:
    import torch
    from tqdm import tqdm

    from grape import model_folder, runtime

    t0 = time.time()
    runtime.setup(params["threads"], seed=params["seed"])
    r = params["reward"]
    rows = read_jsonl(pool_path, POOL, unique="candidate_id", non_empty="the pool written by the verify stage")
    rows.sort(key=lambda x: x["candidate_id"])
    tok = model_folder.load_tokenizer(model_dir)
    model = model_folder.load_model(model_dir, dtype=torch.float32, head="reward")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    enc = tok(texts(tok, Template.from_config(params["template"]), rows), add_special_tokens=False)["input_ids"]
    truncated = sum(len(ids) > r["max_length"] for ids in enc)
    enc = [ids[: r["max_length"]] for ids in enc]
    order = sorted(range(len(rows)), key=lambda i: len(enc[i]))
    rewards = [0.0] * len(rows)
    with torch.inference_mode(), tqdm(total=len(rows), desc="reward", unit="cand") as pbar:
        for start in range(0, len(order), r["batch_size"]):
            batch = order[start : start + r["batch_size"]]
            padded = tok.pad({"input_ids": [enc[i] for i in batch]}, return_tensors="pt")
            logits = model(**{k: v.to(model.device) for k, v in padded.items()}).logits[:, 0].float().cpu()
            for i, value in zip(batch, logits.tolist()):
                if not math.isfinite(value):
                    raise ValueError(f"{model_dir}: the reward of {rows[i]['candidate_id']} is {value}")
                rewards[i] = value
            pbar.update(len(batch))
    out_rows = [{"candidate_id": x["candidate_id"], "instruction_id": x["instruction_id"], "source": x["source"],
                 "reward": rewards[i]} for i, x in enumerate(rows)]  # fmt: skip
    write_jsonl(out, out_rows)
    return {"candidates": len(rows), "truncated": truncated, "seconds": round(time.time() - t0, 2)}
