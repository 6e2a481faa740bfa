"""`sample.backend: hf`: transformers `generate` on the local device (CPU or one GPU), one chunk per call.

Each chunk (`sample.batch_size` instructions, see `grape.sample.checkpoint`) is seeded from the experiment seed and
its index, so a rerun, or a resumed run that asks for some chunks only, regenerates the same candidates.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from tqdm import tqdm

from grape.sample.prompts import build_prompt, cut_at_stop
from grape.template import Template


def generate(params: Mapping, model_dir: str, chunks: list[tuple[int, list[dict]]]) -> Iterator[tuple[int, list]]:
    """Yield (chunk index, results) for every chunk: a result per row x sample, in order (see grape.sample)."""
    import torch

    from grape import model_folder, runtime

    runtime.setup(params["threads"])
    s, source = params["sample"], params["source"]
    template = Template.from_config(params["template"])
    tok = model_folder.load_tokenizer(model_dir, padding_side="left")
    model = model_folder.load_model(model_dir)
    add_special = params["prompt_format"] != "chat"  # chat templates already contain BOS
    for c, batch in tqdm(chunks, desc=f"sample {source}", unit="batch"):
        prompts = [build_prompt(tok, template, params["prompt_format"], r["instruction"]) for r in batch]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(model.device)
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        torch.manual_seed(params["seed"] * 1_000_003 + c)  # by chunk index: the same text however the run went
        with torch.inference_mode():
            gen = model.generate(
                **enc,
                do_sample=True,
                temperature=s["temperature"],
                top_p=s["top_p"],
                top_k=s["top_k"],  # explicit: generate would apply its default 50 otherwise
                max_new_tokens=s["max_new_tokens"],
                num_return_sequences=s["n"],
                stop_strings=s["stop"] or None,
                tokenizer=tok,
                pad_token_id=tok.pad_token_id,
            )
        new = gen[:, enc["input_ids"].shape[1] :]
        results = []
        for j, ids in enumerate(new):
            ids = ids[ids != tok.pad_token_id] if tok.pad_token_id != tok.eos_token_id else ids
            eos = (ids == tok.eos_token_id).nonzero()
            hit_eos = bool(len(eos))
            text, stopped = cut_at_stop(tok.decode(ids, skip_special_tokens=True), s["stop"])
            results.append(
                {
                    "row": batch[j // s["n"]],
                    "k": j % s["n"],
                    "text": text.strip(),
                    "finish": "stop" if stopped else ("eos" if hit_eos else "length"),
                    "prompt_tokens": int(prompt_tokens[j // s["n"]]),
                    "completion_tokens": int(eos[0, 0]) + 1 if hit_eos else len(ids),
                }
            )
        yield c, results
