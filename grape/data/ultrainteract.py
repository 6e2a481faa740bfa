"""`data.kind: ultrainteract`: openbmb/UltraInteract_sft, one train instruction per `parent_id`.

The dataset stores one row per correct trajectory (288,579 rows); rows sharing a `parent_id` share the instruction.
They become ONE instruction (id = the `parent_id`, about 86K of them) with all of their distinct responses, each of
source `original`, because GRAPE chooses among the responses of an instruction. Rows of one parent are scattered
over the file, so they are grouped with `grouping.Grouped` (bounded memory, deterministic order). Later turns
already carry the earlier steps and tool observations in `instruction`, so no `context` is written. When the rows
of a parent disagree on the instruction or the task, the first in input order wins (`instruction_mismatch`,
`task_mismatch`). Blank instructions or responses are dropped and listed (`tally.drop`), never skipped silently.

The dataset has no answer column, so the reference answer is read off the originals, by the rule that `verify`
then applies to every new candidate of the instruction (train `check`, `grape.answers`):

| task     | check      | answer                                                                     |
|----------|------------|----------------------------------------------------------------------------|
| Math_CoT | boxed      | the originals' `\\boxed{...}` content (numbers canonical)                   |
| Logic    | final_line | the originals' first line after the last `Answer:` (option letter, True/False), case-folded |
| Math_PoT | none       | none: the answer is whatever the program prints, known only by running it  |
| Coding   | none       | none: only executing tests could check code                                |
| other    | none       | none (a task name this table does not know)                                |

Originals that disagree (`\\frac{1}{2}` vs `0.5`): the most common answer of the distinct originals wins, ties to
the first seen (`answer_disagreement`; `originals_off_reference` counts the originals it does not match). No original
with an answer: no `answer` (`no_reference_answer:<task>`). Instructions of rule `none` count as
`unverifiable:<task>`; `verify.unverifiable` keeps or drops their new candidates. Also counted: `rows_read`,
`task:<name>` (instructions), `duplicate_responses`. `tally.info["answer_rules"]` records this table.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator, Mapping

from grape.answers import extract_answer
from grape.data.grouping import Grouped, distinct
from grape.data.source import Dataset

DEFAULT_PATH = "openbmb/UltraInteract_sft"
FIELDS = {"task": str, "dataset": str, "instruction": str, "response": str, "id": str, "parent_id": str}
ANSWER_RULES = {"Math_CoT": "boxed", "Logic": "final_line", "Math_PoT": "none", "Coding": "none"}


def reference(responses: list[str], check: str) -> tuple[str | None, int]:
    """(the most common final answer of `responses` under `check`, ties to the first seen; how many distinct
    answers there were). Counter keeps first-seen order among equal counts."""
    found = Counter(a for a in (extract_answer(r, check) for r in responses) if a is not None)
    return (found.most_common(1)[0][0] if found else None), len(found)


def load(d: Mapping, seed: int, tally, workdir) -> tuple[Grouped, list[dict]]:
    ds = Dataset(
        d.get("path") or DEFAULT_PATH, d.get("split") or "train", d.get("revision"), experiment=d.get("experiment")
    )
    tally.info["answer_rules"] = dict(ANSWER_RULES)
    # no held-out split (the stage reads `data.test_path` when set)
    return Grouped([ds], _read, _build, tally, workdir, limit=d.get("limit")), []


def _read(ds: Dataset, rows, add, tally) -> None:
    """Every usable row of one part, filed under its parent_id."""
    n = 0
    for where, row in rows:
        n += 1
        ds.need(where, row, FIELDS)
        instruction, response = row["instruction"], row["response"]
        if not instruction or instruction.isspace():
            tally.drop(where, "empty_instruction", row["id"])
        elif not response or response.isspace():
            tally.drop(where, "empty_response", row["id"])
        else:
            add(row["parent_id"], {"p": row["parent_id"], "i": instruction, "t": row["task"], "r": response})
    tally.add("rows_read", n)


def _build(digest: str, recs: list[dict], tally) -> Iterator[dict]:
    first = recs[0]
    if any(r["i"] != first["i"] for r in recs):
        tally.add("instruction_mismatch")
    if any(r["t"] != first["t"] for r in recs):
        tally.add("task_mismatch")
    task = first["t"].strip() or "unknown"  # the contract wants a non-blank task
    check = ANSWER_RULES.get(task, "none")
    responses = distinct([{"response": r["r"], "source": "original"} for r in recs], tally.counts)
    row = {"id": first["p"], "instruction": first["i"], "responses": responses, "check": check, "task": task}
    tally.add(f"task:{task}")
    if check == "none":
        tally.add(f"unverifiable:{task}")
    else:
        texts = [r["response"] for r in responses]
        answer, n_answers = reference(texts, check)
        if answer is None:
            tally.add(f"no_reference_answer:{task}")
        else:
            row["answer"] = answer
            if n_answers > 1:
                tally.add("answer_disagreement")
            off = sum(extract_answer(t, check) != answer for t in texts)
            if off:
                tally.add("originals_off_reference", off)
    yield row
