"""`data.kind: tulu3`: the paper's Tulu-3 pool, the SFT mixture plus the chosen responses of the preference mixes.

The paper pools `allenai/tulu-3-sft-mixture` with the chosen replies of the Tulu-3 8B/70B and OLMo-2 7B/13B preference
mixes and keeps the instructions that have at least two distinct responses (350.4K instructions, ~1.03M pairs), so
GRAPE has something to choose between. No id links an SFT row to a preference row, so rows are grouped by their
normalised context (`grape.data.conversations.context_key`: same turns, same text up to whitespace and Unicode form).

A dataset's kind is read from its fields: `messages` is an SFT conversation, `chosen` a preference pair whose last
message is the chosen reply (`rejected` is never read). Both go through the one multi-turn rule
(`split_conversation`): the last assistant turn is the candidate, everything before it the context, flattened into
the instruction and kept as `context` when it is more than one user message. A preference row's `prompt` is checked
against a single-turn context; where they disagree the context wins and `prompt_mismatch` is counted.

Datasets are read in config order (SFT mixture first) and a group's records keep input order, so the instruction
text is the SFT row's and `distinct` keeps the SFT copy of a repeated response. Each response is tagged with the
config `name` of the dataset it came from. Rows that cannot be used are dropped with a reason (`tally.drop`). A dataset
without rows stops the import, naming it (an empty SFT mixture would silently leave the SFT arm without its source),
unless its config entry says `allow_empty: true`.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from grape.data.conversations import context_key, flatten, normalise, split_conversation
from grape.data.grouping import BELOW_MIN, Grouped, distinct
from grape.data.source import Dataset
from grape.io import DataError

PARTITIONS = 64  # ~1.9M rows -> ~30K rows held per partition while grouping

# `source` column of tulu-3-sft-mixture -> the licence its dataset card gives for that subset (card revision of
# Dec 2024). FLAN v2 and the OpenMathInstruct-2 GSM subset carry no licence on the card: "see dataset card".
SFT_LICENCES = {
    "ai2-adapt-dev/coconot_converted": "ODC-BY-1.0",
    "ai2-adapt-dev/flan_v2_converted": "see dataset card",
    "ai2-adapt-dev/no_robots_converted": "CC-BY-NC-4.0 (non-commercial)",
    "ai2-adapt-dev/oasst1_converted": "Apache-2.0",
    "ai2-adapt-dev/personahub_math_v5_regen_149960": "ODC-BY-1.0",
    "allenai/tulu-3-sft-personas-math-grade": "ODC-BY-1.0",
    "ai2-adapt-dev/personahub_code_v2_34999": "ODC-BY-1.0",
    "ai2-adapt-dev/tulu_v3.9_personahub_math_interm_algebra_20k": "ODC-BY-1.0",
    "ai2-adapt-dev/personahub_ifdata_manual_seed_v3_29980": "ODC-BY-1.0",
    "ai2-adapt-dev/numinamath_tir_math_decontaminated": "Apache-2.0",
    "ai2-adapt-dev/tulu_v3.9_synthetic_finalresp_wildguardmixtrain_decontaminated_50k": "Apache-2.0",
    "ai2-adapt-dev/tulu_v3.9_wildjailbreak_decontaminated_50k": "ODC-BY-1.0",
    "ai2-adapt-dev/tulu_hard_coded_repeated_10": "CC-BY-4.0",
    "ai2-adapt-dev/tulu_v3.9_aya_100k": "Apache-2.0",
    "ai2-adapt-dev/tulu_v3.9_wildchat_100k": "ODC-BY-1.0",
    "ai2-adapt-dev/tulu_v3.9_table_gpt_5k": "MIT",
    "ai2-adapt-dev/tulu_v3.9_sciriff_10k": "ODC-BY-1.0",
    "ai2-adapt-dev/evol_codealpaca_heval_decontaminated": "Apache-2.0",
    "ai2-adapt-dev/tulu_v3.9_open_math_2_gsm8k_50k": "see dataset card",
}
UNKNOWN_LICENCE = "see dataset card"
# The preference mixes' cards: ODC-BY-1.0 for the collection, "different licenses apply to subsets".
PREFERENCE_LICENCE = "ODC-BY-1.0 (mixture; subsets differ: see dataset card)"


def load(d: Mapping, seed: int, tally, workdir):
    """(train rows, []): the pool has no held-out split; rows stream from a generator (see `_rows`)."""
    specs = [
        Dataset(s["path"], s.get("split") or "train", s.get("revision"), s["name"], d.get("experiment"),
                allow_empty=bool(s.get("allow_empty")))
        for s in d["datasets"]
    ]  # fmt: skip
    if not specs:
        raise ValueError("data.datasets: list the Tulu-3 datasets, {name, path}, the SFT mixture first")
    if len({ds.name for ds in specs}) != len(specs):
        raise ValueError("data.datasets: each dataset needs its own `name` (responses are tagged with it)")
    tally.info.setdefault("licences", {})
    tally.info["datasets"] = []
    grouped = Grouped(specs, _read, _build(d["min_responses"]), tally, workdir, PARTITIONS, d.get("limit"))
    grouped.on_dataset = _dataset_read
    grouped.empty_hint = "; set `allow_empty: true` on it in data.datasets if the pool may lack it"
    return grouped, []


def _dataset_read(ds: Dataset, tally) -> None:
    rows = tally.counts[f"rows_read:{ds.name}"]
    if rows and not tally.counts[f"rows_used:{ds.name}"] and not ds.allow_empty:  # read, but every row dropped
        from grape.io import DataError

        raise DataError(
            ds.path,
            None,
            None,
            f"no usable rows: all {rows} rows of dataset {ds.name!r} of the mix were dropped "
            "(their reasons: data/dropped.jsonl); set `allow_empty: true` on it in data.datasets if the pool may lack it",
        )
    tally.info["datasets"].append({"name": ds.name, "path": ds.path, "revision": ds.revision, "rows": rows})


def _build(min_responses: int):
    def build(digest: str, recs: list[dict], tally) -> Iterator[dict]:
        responses = distinct([{"response": r["r"], "source": r["s"]} for r in recs], tally.counts)
        context = recs[0]["c"]  # the first record: SFT mixture first, then input order
        row = {"id": f"tulu3-{digest}", "instruction": flatten(context), "responses": responses}
        if len(context) > 1 or context[0]["role"] != "user":
            row["context"] = context
        if len(responses) < min_responses:  # not in the pool (the paper's >= 2 filter); kept aside for the arms
            tally.add("instructions_below_min_responses")  # trained on all data (sft_full, all_available)
            tally.add("pairs_below_min_responses", len(responses))
            yield {**row, BELOW_MIN: True}
            return
        if "context" in row:
            tally.add("multi_turn")
        for r in responses:
            tally.add(f"pairs:{r['source']}")
        yield row

    return build


def _read(ds: Dataset, rows, add, tally) -> None:
    """Add every usable row of one dataset (or part of it) to the grouper, counting and dropping the others."""
    kind, n, used = None, 0, 0
    licences = tally.info.setdefault("licences", {})
    for where, row in rows:
        n += 1
        kind = kind or _kind(ds, where, row)
        field = "messages" if kind == "sft" else "chosen"
        ds.need(where, row, {field: (list, tuple)})
        if kind == "sft":
            subset = str(row.get("source") or ds.name)
            licences[subset] = SFT_LICENCES.get(subset, UNKNOWN_LICENCE)
        else:
            licences[ds.name] = PREFERENCE_LICENCE
        split = _conversation(row[field])
        if isinstance(split, str):
            tally.drop(where, split, row.get("id"))
            continue
        context, answer = split
        prompt = row.get("prompt") if kind == "preference" else None
        if isinstance(prompt, str) and len(context) == 1 and normalise(prompt) != normalise(context[0]["content"]):
            tally.add("prompt_mismatch")
        add(context_key(context), {"c": context, "r": answer, "s": ds.name})
        used += 1
    tally.add(f"rows_read:{ds.name}", n)
    tally.add(f"rows_used:{ds.name}", used)


def _kind(ds: Dataset, where: str, row: Mapping) -> str:
    """`sft` for a `messages` row, `preference` for a `chosen` row; anything else is not a Tulu-3 dataset."""
    if "messages" in row:
        return "sft"
    if "chosen" in row:
        return "preference"
    raise DataError(
        where,
        None,
        "messages",
        f"missing in dataset {ds.name!r} ({ds.label()}): a Tulu-3 dataset has `messages` (SFT mixture) or "
        f"`chosen` (preference mix); have: {', '.join(row)}",
    )


def _conversation(messages) -> tuple[list[dict], str] | str:
    """(context, answer) of a usable conversation, else the reason it is dropped."""
    split = split_conversation(messages)
    if split is None:
        last = messages[-1] if len(messages) else None
        ends_with_answer = isinstance(last, Mapping) and last.get("role") == "assistant"
        return "malformed_conversation" if ends_with_answer else "no_assistant_answer"
    context, answer = split
    if any(m["role"] == "user" and not m["content"].strip() for m in context):
        return "empty_instruction"
    if not answer.strip():
        return "empty_response"
    return context, answer
