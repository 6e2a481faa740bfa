"""Answer rules: the fast numeric search agrees with a full scan; boxed and final_line read what datasets write."""

from __future__ import annotations

import random

import pytest

from grape import answers


def test_numeric_from_the_end_equals_a_full_scan():
    rng = random.Random(1)
    alphabet = "ab Answer is: The answer is 0123456789,.-$\n xyz"
    for _ in range(50_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert answers.numeric(text) == answers._numeric_scan(text), text


@pytest.mark.parametrize(
    "text, check, expected",
    [
        ("Step 1: ...\nAnswer:\n\\boxed{\\frac{1}{2}}", "boxed", "\\frac{1}{2}"),
        ("so \\boxed{ 1,000 }.", "boxed", "1000"),
        ("\\boxed{x} then \\boxed{3.50}", "boxed", "3.5"),
        ("no box", "boxed", None),
        ("Step 2: B fits.\nAnswer:\nB", "final_line", "b"),
        ("Answer: True.", "final_line", "true"),
        ("It is 7, and the answer is 12; not 13", "numeric", "12"),
        ("code only", "none", None),
    ],
)
def test_rules_extract_the_final_answer(text, check, expected):
    assert answers.extract_answer(text, check) == expected


def test_is_correct_compares_in_the_rule_s_form():
    assert answers.is_correct("Answer:\n\\boxed{0.5}", "0.50", "boxed")
    assert answers.is_correct("Answer:\nb", "B", "final_line")
    assert answers.is_correct("The answer is 1,200.", 1200)
    assert answers.is_correct("def f(): ...", "x", "none") is None
    assert answers.is_correct("7", None) is None
