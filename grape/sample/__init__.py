"""The `sample` stage: n candidate responses per train instruction from one source model.

Reads: `data/train.jsonl` (`grape.contracts.TRAIN`) and the source's model folder. Writes:
`candidates/<source>.jsonl` (`grape.contracts.CANDIDATE`), one row per instruction x sample, each recording
the sampling parameters that made it. The backend (`sample.backend`, `BACKENDS`) only generates text; turning
its output into candidate rows, counting finish reasons and refusing empty input happen here, once for all.
A new backend is a module with `generate(params, model_dir, rows) -> iterator of (row, sample_index, text,
finish)`, added to `BACKENDS` and to the schema's `sample.backend` enum.
"""

from __future__ import annotations

import importlib
from collections import Counter
from typing import Mapping

from grape.contracts import TRAIN
from grape.io import read_jsonl, write_jsonl

# sample.backend -> module with generate(params, model_dir, rows)
BACKENDS = {"hf": "grape.sample.hf"}
FINISH_REASONS = ("stop", "length", "eos")


def backend(name: str):
    if name not in BACKENDS:
        raise ValueError(f"sample.backend {name!r} is not one of {sorted(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def sampling_record(params: Mapping) -> dict:
    """What made a candidate, stored in its row."""
    s = params["sample"]
    return {
        "temperature": s["temperature"],
        "top_p": s["top_p"],
        "max_new_tokens": s["max_new_tokens"],
        "n": s["n"],
        "seed": params["seed"],
        "prompt_format": params["prompt_format"],
    }


def run(params: Mapping, model_dir: str, train_path: str, out: str) -> dict:
    source = params["source"]
    rows = read_jsonl(train_path, TRAIN, unique="id", non_empty="the train instructions written by the data stage")
    sampling = sampling_record(params)
    out_rows, finished = [], Counter({k: 0 for k in FINISH_REASONS})
    for row, k, text, finish in backend(params["sample"]["backend"]).generate(params, model_dir, rows):
        finished[finish] += 1
        cand = {
            "candidate_id": f"{row['id']}:{source}:{k}",
            "instruction_id": row["id"],
            "instruction": row["instruction"],
            "response": text,
            "source": source,
            "sample_index": k,
        }
        if row.get("answer") is not None:
            cand["answer"] = row["answer"]
        out_rows.append({**cand, "finish": finish, "sampling": sampling})
    write_jsonl(out, out_rows)
    return {"candidates": len(out_rows), **{f"finish_{k}": v for k, v in finished.items()}}
