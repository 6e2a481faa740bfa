"""The `verify` stage: build the candidate pool and drop candidates whose final answer is wrong.

The paper filters UltraInteract's new responses against the reference answers before GRAPE picks
among them. The dataset's own reference responses join the pool as source `original`, so an
instruction left with no correct model candidate keeps its reference. Every dropped candidate is
counted per source and reason; nothing leaves silently.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Mapping

from grape.data import TRAIN_SPEC
from grape.io import read_jsonl, write_json, write_jsonl

CANDIDATE_SPEC = {"candidate_id": ((str,), True, True), "instruction_id": ((str,), True, True),
                  "instruction": ((str,), True, True), "response": ((str,), True, False),
                  "source": ((str,), True, True), "sample_index": ((int,), True, False),
                  "answer": ((str,), True, False)}
POOL_SPEC = {**CANDIDATE_SPEC, "response": ((str,), True, True), "correct": ((bool,), True, False)}

_ANSWER_IS = re.compile(r"answer is[:\s]*\$?(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(text: str) -> str | None:
    """The final numeric answer: after "the answer is" if present, else the last number in the text."""
    m = _ANSWER_IS.findall(text)
    found = m[-1] if m else (_NUMBER.findall(text) or [None])[-1]
    if found is None:
        return None
    found = found.replace(",", "")
    try:
        value = float(found)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else str(value)


def is_correct(response: str, answer: str) -> bool:
    got = extract_answer(response)
    return got is not None and got == extract_answer(str(answer))


def run(params: Mapping, train_path: str, candidate_paths: list[str], out: str, counts_out: str) -> dict:
    drop = params["verify"]["drop_incorrect"]
    train = read_jsonl(train_path, TRAIN_SPEC, unique="id")
    pool, seen = [], set()
    counts: dict[str, Counter] = {}
    for row in train:
        pool.append({"candidate_id": f"{row['id']}:original:0", "instruction_id": row["id"],
                     "instruction": row["instruction"], "response": row["response"], "source": "original",
                     "sample_index": 0, "answer": row["answer"], "correct": is_correct(row["response"], row["answer"])})
        counts.setdefault("original", Counter())["generated"] += 1
        counts["original"]["kept"] += 1
    known = {r["id"] for r in train}
    for path in candidate_paths:
        for cand in read_jsonl(path, CANDIDATE_SPEC, unique="candidate_id"):
            c = counts.setdefault(cand["source"], Counter())
            c["generated"] += 1
            if cand["instruction_id"] not in known:
                raise ValueError(f"{path}: candidate {cand['candidate_id']} names unknown instruction "
                                 f"{cand['instruction_id']!r}")
            if cand["candidate_id"] in seen:
                raise ValueError(f"{path}: duplicate candidate_id {cand['candidate_id']!r} across files")
            seen.add(cand["candidate_id"])
            if not cand["response"].strip():
                c["dropped_empty"] += 1
                continue
            ok = is_correct(cand["response"], cand["answer"])
            c["correct"] += ok
            if drop and not ok:
                c["dropped_no_answer" if extract_answer(cand["response"]) is None else "dropped_wrong"] += 1
                continue
            c["kept"] += 1
            keep = {k: cand[k] for k in CANDIDATE_SPEC}
            pool.append({**keep, "correct": ok})
    write_jsonl(out, pool)
    table = [{"source": src, "generated": c["generated"], "correct": c["correct"] if src != "original" else c["kept"],
              "dropped_empty": c["dropped_empty"], "dropped_no_answer": c["dropped_no_answer"],
              "dropped_wrong": c["dropped_wrong"], "kept": c["kept"]} for src, c in counts.items()]
    write_json(counts_out, table)
    return {"pool": len(pool), "by_source": table}
