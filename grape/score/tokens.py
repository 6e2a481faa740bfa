"""Token-level pieces every scoring backend shares: the overlong policy and groups of candidates by prompt.

Candidates whose prompt token ids are equal (one instruction) form a `Group`: a backend that can share the prompt
computes it once. `grape.score.stream` tokenizes the pool chunk by chunk (through `grape.template.Template`, so
every backend scores the same tokens) and builds the groups with `group_examples`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

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
