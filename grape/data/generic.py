"""`data.kind: generic`: any pool, from a hub dataset or a JSONL/Parquet/Arrow file, with its fields named in config.

One input row is one (instruction, response) pair; rows with the same instruction become one instruction with
several responses, so a pool that already holds candidates from several models needs no code:

    data:
      kind: generic
      path: my_pool.parquet            # or a hub id, or a directory
      fields: {instruction: prompt, response: output, source: model, answer: null, id: null, task: null}

`fields.messages` instead of `instruction`/`response` reads chat rows (`[{role, content}]`) by the multi-turn rule
of `grape.data.conversations`. Rows are grouped by the normalised instruction (or context), or by `fields.id` when
given (then every row of an id must carry the same instruction). A source defaults to `original`; an answer, when
mapped, is the first non-empty one of the group, compared by the `numeric` rule unless `fields.check` names a
column with the rule. Instructions with fewer than `min_responses` distinct responses are counted and kept out of the pool (`grape.data.BELOW_MIN`). A file
without rows (empty, or blank lines only) stops the import naming it (`grape.data.grouping`), and a missing path
that looks local is `file not found`, never looked up as a hub id (`grape.data.source`).
"""

from __future__ import annotations

from typing import Mapping

from grape.data.conversations import context_key, flatten, normalise, signature, split_conversation
from grape.data.grouping import BELOW_MIN, Grouped, distinct, key_hash
from grape.data.source import Dataset

FIELDS = ("instruction", "response", "messages", "id", "source", "answer", "task", "check")


def _pair(ds: Dataset, f: Mapping, where: str, row: Mapping, tally) -> tuple[list[dict] | None, str, str] | None:
    """(context or None, instruction, response) of one row, or None when the row was dropped (counted)."""
    if f.get("messages"):
        ds.need(where, row, {f["messages"]: (list, tuple)})
        split = split_conversation(row[f["messages"]])
        if split is None:
            tally.drop(where, "no_assistant_answer", row.get(f.get("id") or "", None))
            return None
        context, response = split
        instruction = flatten(context)
    else:
        ds.need(where, row, {f["instruction"]: str, f["response"]: str})
        context, instruction, response = None, row[f["instruction"]], row[f["response"]]
    if not instruction or instruction.isspace():
        tally.drop(where, "empty_instruction", row.get(f["id"]) if f.get("id") else None)
        return None
    if not response or response.isspace():
        tally.drop(where, "empty_response", row.get(f["id"]) if f.get("id") else None)
        return None
    return context, instruction, response


def load(d: Mapping, seed: int, tally, workdir):
    f = {k: (d.get("fields") or {}).get(k) for k in FIELDS}
    if not f["messages"] and not (f["instruction"] and f["response"]):
        raise ValueError("data.fields: name `messages`, or both `instruction` and `response`")
    ds = Dataset(d["path"], d.get("split") or "train", d.get("revision"), experiment=d.get("experiment"))

    def read(ds: Dataset, rows, add, tally) -> None:
        _read(ds, f, rows, add, tally)

    def build(digest: str, recs: list[dict], tally):
        subs = [recs] if f["id"] else _same_instruction(recs)
        for sub in subs:
            row = _instruction(sub, f, d, tally, digest if len(subs) == 1 else key_hash(normalise(sub[0]["i"])))
            if row is not None:
                yield row

    return Grouped([ds], read, build, tally, workdir, limit=d.get("limit")), []


def _read(ds: Dataset, f: Mapping, rows, add, tally) -> None:
    """One part of the dataset into the grouper: every usable row as a record under its instruction's key."""
    extras = [(k, f[k]) for k in ("answer", "task", "check") if f[k]]
    source_field, id_field = f["source"], f["id"]
    n = 0
    for where, row in rows:
        n += 1
        pair = _pair(ds, f, where, row, tally)
        if pair is None:
            continue
        context, instruction, response = pair
        source = str(row.get(source_field) or "original") if source_field else "original"
        rec = {"i": instruction, "r": response, "s": source}
        extra = {k: row[col] for k, col in extras if row.get(col) not in (None, "")}
        if extra:
            rec["x"] = extra
        if context:
            rec["c"] = context
        if id_field:
            key = rec["k"] = str(row[id_field])
        else:
            key = context_key(context) if context else signature(instruction)
        add(key, rec)
    tally.add("rows_read", n)


def _same_instruction(recs: list[dict]) -> list[list[dict]]:
    """Records of one grouping digest split by normalised instruction (grouping screens by `signature`, which two
    different instructions can share); the common case, one raw text, costs no normalisation."""
    if recs[0].get("c") or all(r["i"] == recs[0]["i"] for r in recs):  # chat rows: grouped by the exact key
        return [recs]
    subs: dict[str, list[dict]] = {}
    for r in recs:
        subs.setdefault(normalise(r["i"]), []).append(r)
    return list(subs.values())


def _instruction(recs: list[dict], f: Mapping, d: Mapping, tally, digest: str) -> dict | None:
    first = recs[0]
    if f["id"] and any(r["i"] != first["i"] for r in recs):
        tally.add("instruction_mismatch")
    responses = distinct([{"response": r["r"], "source": r["s"]} for r in recs], tally.counts)
    out = {"id": first["k"] if f["id"] else f"pool-{digest}", "instruction": first["i"], "responses": responses}
    if len(responses) < d["min_responses"]:  # not in the pool; kept aside for the arms trained on all data
        tally.add("instructions_below_min_responses")
        tally.add("pairs_below_min_responses", len(responses))
        out[BELOW_MIN] = True
    for k in ("answer", "task", "check"):
        value = next((r["x"][k] for r in recs if k in r.get("x", ())), None)
        if value is not None:
            out[k] = str(value)
    context = first.get("c")
    if context and not (len(context) == 1 and context[0]["role"] == "user"):
        out["context"] = context
    return out
