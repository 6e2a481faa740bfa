"""Pool rows -> token ids grouped by prompt, with the overlong policy: the input side every backend shares.

`prepare` tokenizes each candidate through `grape.template.Template.tokenize` (so every backend scores the same
tokens), applies `score.overlong`, and groups candidates whose prompt token ids are equal (one instruction):
a backend that can share the prompt computes it once. `plan_chunks` cuts the groups into the checkpoint chunks
of `grape.score.checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from grape.template import Template

ROW_FIELDS = ("candidate_id", "instruction_id", "instruction", "response", "source")
OVERLONG = ("skip", "truncate")


def fit_to_length(prompt_ids: list[int], response_ids: list[int], max_length: int, overlong: str):
    """Apply the overlong policy. Returns (response_ids, status) with status ok|truncated|skip:<reason>."""
    if len(prompt_ids) >= max_length:
        return None, "skip:prompt_over_context"
    if not response_ids:
        return None, "skip:empty_response"
    if len(prompt_ids) + len(response_ids) <= max_length:
        return response_ids, "ok"
    if overlong == "truncate":
        return response_ids[: max_length - len(prompt_ids)], "truncated"
    return None, "skip:over_context"


@dataclass
class Group:
    """Candidates that share one prompt (token ids). `keys` sorted; `responses[i]` belongs to keys[i]."""

    prompt: tuple[int, ...]
    keys: list = field(default_factory=list)
    responses: list = field(default_factory=list)


def group_examples(examples: Iterable[tuple]) -> list[Group]:
    """Group (key, prompt_ids, response_ids) by prompt; canonical order (by smallest key), whatever the input order."""
    by_prompt: dict[tuple, Group] = {}
    for key, prompt_ids, response_ids in examples:
        prompt = tuple(prompt_ids)
        if not prompt:
            raise ValueError(f"{key!r}: empty prompt (the template gives no tokens before the response)")
        if not response_ids:
            raise ValueError(f"{key!r}: empty response")
        g = by_prompt.setdefault(prompt, Group(prompt))
        g.keys.append(key)
        g.responses.append(list(response_ids))
    groups = []
    for g in by_prompt.values():
        order = sorted(range(len(g.keys)), key=lambda i: g.keys[i])
        groups.append(Group(g.prompt, [g.keys[i] for i in order], [g.responses[i] for i in order]))
    groups.sort(key=lambda g: g.keys[0])
    return groups


@dataclass
class Prepared:
    meta: dict  # candidate_id -> (instruction_id, source, truncated)
    skipped: list  # [{candidate_id, reason}], sorted by candidate_id
    groups: list  # [Group], canonical order; keys are candidate ids


def _validate(rows: Sequence[Mapping]) -> None:
    seen = set()
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {i}: expected a mapping, got {type(row).__name__}")
        for f in ROW_FIELDS:
            if f not in row:
                raise ValueError(f"row {i} (candidate_id={row.get('candidate_id')!r}): field '{f}' missing")
            if not isinstance(row[f], str):
                raise ValueError(
                    f"row {i} (candidate_id={row.get('candidate_id')!r}): field '{f}' must be a string, "
                    f"got {type(row[f]).__name__}"
                )
        if row["candidate_id"] in seen:
            raise ValueError(f"row {i}: duplicate candidate_id {row['candidate_id']!r}")
        seen.add(row["candidate_id"])


def prepare(
    tokenizer, template: Template, rows: Iterable[Mapping], max_length: int, overlong: str = "skip"
) -> Prepared:
    """Validate, tokenize and group the pool; apply the overlong policy."""
    if overlong not in OVERLONG:
        raise ValueError(f"overlong must be 'skip' or 'truncate', got {overlong!r}")
    rows = list(rows)
    _validate(rows)
    meta, skipped, examples = {}, [], []
    for row in rows:
        p, r = template.tokenize(tokenizer, row["instruction"], row["response"], add_eos=template.score_eos)
        r, status = fit_to_length(p, r, max_length, overlong)
        if r is None:
            skipped.append({"candidate_id": row["candidate_id"], "reason": status.split(":", 1)[1]})
            continue
        meta[row["candidate_id"]] = (row["instruction_id"], row["source"], status == "truncated")
        examples.append((row["candidate_id"], p, r))
    skipped.sort(key=lambda s: s["candidate_id"])
    return Prepared(meta, skipped, group_examples(examples))


def plan_chunks(groups: Sequence[Group], chunk_size: int | None) -> list[list[Group]]:
    """Consecutive whole groups of at least `chunk_size` candidates (the last may be smaller); None: one chunk."""
    if not chunk_size:
        return [list(groups)] if groups else []
    chunks, cur, n = [], [], 0
    for g in groups:
        cur.append(g)
        n += len(g.keys)
        if n >= chunk_size:
            chunks.append(cur)
            cur, n = [], 0
    if cur:
        chunks.append(cur)
    return chunks
