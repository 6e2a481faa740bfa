"""Final-answer rules: how a response's final answer is found and compared with the reference answer.

Shared by the importers (which derive an instruction's reference answer from the dataset's own correct responses
and record the rule in the train row's `check` field) and by `verify` (which applies the same rule to every new
candidate), so the two can never disagree. Rules (`RULES`):

- numeric:    the number after "the answer is", else the last number in the text; compared as numbers
              (the demo's arithmetic, GSM-style answers).
- boxed:      the content of the last `\\boxed{...}` (braces nested), whitespace and `$` removed, numbers
              compared as numbers (UltraInteract Math_CoT; the MATH convention).
- final_line: the first non-empty line after the last "Answer:" marker, case-folded, trailing period removed
              (UltraInteract Logic: an option letter or a short phrase).
- none:       no final answer can be compared without running the response (code, program-of-thought);
              candidates of such instructions are "unverifiable" and `verify.unverifiable` decides their fate.
"""

from __future__ import annotations

import re
from typing import Callable

_ANSWER_IS = re.compile(r"answer is[:\s]*\$?(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_NOT_DIGITS = "".join(chr(c) for c in range(128) if not chr(c).isdigit())
_ANSWER_MARK = re.compile(r"answer\s*:", re.IGNORECASE)


def _as_number(text: str) -> str | None:
    text = text.replace(",", "")
    if text.isdigit() and text.isascii():  # the common case, without the float round trip
        return str(int(text))
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return str(int(value)) if value == int(value) else str(value)


def numeric(text: str) -> str | None:
    """The number of the last "answer is N", else the last number. ASCII text (nearly all) is searched from the
    end, which gives the same match as scanning the whole text (`_numeric_scan`) at a fraction of the cost."""
    if not text.isascii():
        return _numeric_scan(text)
    lower = text.lower()  # same length as text for ASCII, so positions carry over
    pos = lower.rfind("answer is")
    while pos >= 0:
        m = _ANSWER_IS.match(lower, pos)
        if m:
            return _as_number(m.group(1))
        pos = lower.rfind("answer is", 0, pos)
    end = len(text.rstrip(_NOT_DIGITS)) - 1  # the last digit, found from the end
    if end < 0:
        return None
    start = end
    while start > 0 and text[start - 1] in "0123456789,.-":
        start -= 1
    # No match of _NUMBER crosses text[start - 1] (not a number character), so a scan from `start` finds the same
    # last number a scan of the whole text would.
    return _as_number(_NUMBER.findall(text, start)[-1])


def _numeric_scan(text: str) -> str | None:
    m = _ANSWER_IS.findall(text)
    found = m[-1] if m else (_NUMBER.findall(text) or [None])[-1]
    return None if found is None else _as_number(found)


def boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return _boxed_form(text[i:j])
    return None


def _boxed_form(inner: str) -> str | None:
    inner = re.sub(r"\s+|\$", "", inner).rstrip(".")
    return (_as_number(inner) or inner) if inner else None


def final_line(text: str) -> str | None:
    marks = list(_ANSWER_MARK.finditer(text))
    if not marks:
        return None
    for line in text[marks[-1].end() :].splitlines():
        line = line.strip().rstrip(".").strip()
        if line:
            return line.casefold()
    return None


RULES: dict[str, Callable[[str], str | None] | None] = {
    "numeric": numeric,
    "boxed": boxed,
    "final_line": final_line,
    "none": None,
}


def rule(name: str | None) -> Callable[[str], str | None] | None:
    name = name or "numeric"
    if name not in RULES:
        raise ValueError(f"unknown answer rule {name!r} (known: {', '.join(RULES)})")
    return RULES[name]


def extract_answer(text: str, check: str | None = None) -> str | None:
    """The final answer of `text` under rule `check` (default numeric); None when there is none."""
    fn = rule(check)
    return None if fn is None else fn(text)


def normalise_reference(answer, check: str | None = None) -> str | None:
    """A reference answer in the form `extract_answer` returns (numbers canonical, case folded for final_line)."""
    text = str(answer).strip()
    if check in (None, "numeric"):
        return numeric(text)
    if check == "boxed":
        return boxed(text) if "\\boxed{" in text else _boxed_form(text)
    return text.casefold().rstrip(".").strip() if check == "final_line" else None


def is_correct(response: str, answer, check: str | None = None) -> bool | None:
    """Whether the final answers match; None when there is nothing to compare (no answer, or rule `none`)."""
    if answer is None or rule(check) is None:
        return None
    return matches(response, normalise_reference(answer, check), check)


def matches(response: str, expected: str | None, check: str | None = None) -> bool:
    """`is_correct` with the reference already normalised (once per instruction, not once per candidate)."""
    got = extract_answer(response, check)
    return got is not None and got == expected
