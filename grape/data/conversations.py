"""Chat conversations as GRAPE instructions: one documented rule for multi-turn data, and one grouping key.

Rule (docs/importers.md): the last message must be the assistant's; it is the candidate response. Every message
before it is the context. A context of a single user message is the instruction as it is. A longer context
(several turns, or a system message) is flattened, message by message, into

    System: {content}\\n\\nUser: {content}\\n\\nAssistant: {content}\\n\\nUser: {content}

so the `Question: {instruction}\\nAnswer: {response}` template scores the last answer given the whole dialogue,
and the context itself is kept (train `context`) so SFT tools get the conversation back in `messages`.

Grouping key (`context_key`): roles plus contents with Unicode NFC, runs of whitespace collapsed to one space and
leading/trailing whitespace removed; case is kept. Two rows with the same key are the same instruction.
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def normalise(text: str) -> str:
    """NFC, runs of whitespace as one space, ends stripped (`str.split`: ~10x a regex over a million responses)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


# What str.split() treats as whitespace among ASCII characters (\t \n \v \f \r, \x1c-\x1f, space).
_ASCII_SPACE = bytes(range(0x09, 0x0E)) + bytes(range(0x1C, 0x21))


def signature(text: str) -> bytes:
    """The text without any whitespace: equal for any two texts whose `normalise` is equal (the converse need not
    hold), and ~10x cheaper for ASCII text, so it can screen a million texts before `normalise` compares the few
    that match."""
    if text.isascii():
        return text.encode("ascii").translate(None, _ASCII_SPACE)
    return normalise(text).encode("utf-8").translate(None, _ASCII_SPACE)


def split_conversation(messages: Sequence) -> tuple[list[dict], str] | None:
    """(context, answer) of a conversation whose last message is the assistant's; None when it is not one."""
    if not isinstance(messages, (list, tuple)) or len(messages) < 2:
        return None
    msgs = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLE_NAMES:
            return None
        msgs.append({"role": m["role"], "content": m["content"]})
    if msgs[-1]["role"] != "assistant" or not any(m["role"] == "user" for m in msgs[:-1]):
        return None
    return msgs[:-1], msgs[-1]["content"]


def flatten(context: Sequence[dict]) -> str:
    """The instruction text of a context (see the module docstring)."""
    if len(context) == 1 and context[0]["role"] == "user":
        return context[0]["content"]
    return "\n\n".join(f"{ROLE_NAMES[m['role']]}: {m['content']}" for m in context)


def context_key(context: Sequence[dict]) -> str:
    return "\x1e".join(f"{m['role']}\x1f{normalise(m['content'])}" for m in context)
