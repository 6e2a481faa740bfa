"""The `verify` stage: build the candidate pool and drop candidates whose final answer is wrong.

Reads: `data/train.jsonl` (`grape.contracts.TRAIN`) and every source's `candidates/<source>.jsonl`
(`CANDIDATE`). Writes: `pool/pool.jsonl` (`POOL`) and `pool/verify_counts.json` (per source: generated,
correct, dropped by reason, kept).

The paper filters UltraInteract's new responses against the reference answers before GRAPE picks
among them. The dataset's own reference responses join the pool as source `original`, so an
instruction left with no correct model candidate keeps its reference. Every dropped candidate is
counted per source and reason; nothing leaves silently. An empty candidates file is an error (the
sample stage wrote nothing); a source whose every candidate was dropped is legitimate and shows as
`kept: 0` in the counts and the report.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Mapping

from grape.contracts import CANDIDATE, POOL, TRAIN
from grape.io import read_jsonl, write_json, write_jsonl

POOL_FIELDS = [f for f in POOL if f != "correct"]  # copied from a candidate row into the pool
NEEDS_ANSWER = "verify.drop_incorrect compares each candidate's final answer with it"

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


def is_correct(response: str, answer: str | None) -> bool | None:
    """Whether the final answers match; None when there is no reference answer to compare with."""
    if answer is None:
        return None
    got = extract_answer(response)
    return got is not None and got == extract_answer(str(answer))


def run(params: Mapping, train_path: str, candidate_paths: list[str], out: str, counts_out: str) -> dict:
    drop = params["verify"]["drop_incorrect"]
    need = {"answer": NEEDS_ANSWER} if drop else {}
    train = read_jsonl(train_path, TRAIN, unique="id", require=need, non_empty="the train instructions")
    pool, seen = [], set()
    counts: dict[str, Counter] = {}
    for row in train:
        orig = {
            "candidate_id": f"{row['id']}:original:0",
            "instruction_id": row["id"],
            "instruction": row["instruction"],
            "response": row["response"],
            "source": "original",
            "sample_index": 0,
        }
        if row.get("answer") is not None:
            orig["answer"] = row["answer"]
        pool.append({**orig, "correct": is_correct(row["response"], row.get("answer"))})
        counts.setdefault("original", Counter())["generated"] += 1
        counts["original"]["kept"] += 1
    known = {r["id"] for r in train}
    for path in candidate_paths:
        cands = read_jsonl(
            path,
            CANDIDATE,
            unique="candidate_id",
            require=need,
            non_empty="the sample stage's candidates (one row per instruction x sample)",
        )
        for cand in cands:
            c = counts.setdefault(cand["source"], Counter())
            c["generated"] += 1
            if cand["instruction_id"] not in known:
                raise ValueError(
                    f"{path}: candidate {cand['candidate_id']} names unknown instruction {cand['instruction_id']!r}"
                )
            if cand["candidate_id"] in seen:
                raise ValueError(f"{path}: duplicate candidate_id {cand['candidate_id']!r} across files")
            seen.add(cand["candidate_id"])
            if not cand["response"].strip():
                c["dropped_empty"] += 1
                continue
            ok = is_correct(cand["response"], cand.get("answer"))
            c["correct"] += bool(ok)
            if drop and not ok:
                c["dropped_no_answer" if extract_answer(cand["response"]) is None else "dropped_wrong"] += 1
                continue
            c["kept"] += 1
            keep = {k: cand[k] for k in POOL_FIELDS if k in cand}
            pool.append({**keep, "correct": ok})
    write_jsonl(out, pool)
    table = [
        {
            "source": src,
            "generated": c["generated"],
            "correct": c["correct"] if src != "original" else c["kept"],
            "dropped_empty": c["dropped_empty"],
            "dropped_no_answer": c["dropped_no_answer"],
            "dropped_wrong": c["dropped_wrong"],
            "kept": c["kept"],
        }
        for src, c in counts.items()
    ]
    write_json(counts_out, table)
    return {"pool": len(pool), "by_source": table}
