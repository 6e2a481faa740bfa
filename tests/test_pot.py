"""Program of thought, as the Eurus suite runs it (grape/evaluate/lm_eval_tasks/grape_pot.py): the last ```python block of a
generation runs in the suite's sandbox (grape.evaluate.sandbox) with a time limit, its printed output is the answer, judged as the CoT
variant judges; no block: the text's own answer. Hand-written generations whose verdicts we know."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "grape" / "evaluate" / "lm_eval_tasks"))
import grape_pot  # noqa: E402  (lm-eval loads it by file, as !function grape_pot.x)


def gen(code: str, tail: str = "") -> str:
    return f"Step 1: compute.\n```python\n{code}\n```\n{tail}"


@pytest.mark.parametrize(
    "generation, answer",
    [
        (gen("x = 16 - 3 - 4\nx * 2"), "18"),  # the last line is printed, as a notebook shows it
        (gen("print(7 * 6)"), "42"),
        (gen("a = 1", "") + gen("print(a)"), ""),  # each block alone, fresh: `a` is not defined in the last one
        (gen("print(1)") + gen("print(2)"), "2"),  # the last block's output
        (gen("raise ValueError('no')"), ""),  # an error: no answer
        (gen("import time\ntime.sleep(30)\nprint(1)"), ""),  # past the time limit: no answer
        (gen("import os\nos.system('echo hacked')\n5"), "5"),  # no shell in the sandbox: 'hacked' is never printed
        ("The total is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),  # no block: the text's own answer
        ("so the result is 12.\nAnswer: 12", "12"),
    ],
)
def test_the_answer_of_a_generation(generation, answer, monkeypatch):
    monkeypatch.setattr(grape_pot, "TIMEOUT_S", 1.0)
    assert grape_pot.answer_of(generation) == answer


def test_a_program_past_its_time_limit_is_stopped():
    assert grape_pot.run_program("import time\ntime.sleep(30)\nprint(1)", timeout=1.0) == ("timeout", "")
    assert grape_pot.run_program("x = 2\nx + 1") == ("ok", "3\n")


def test_verdicts_follow_the_cot_variants_equivalence():
    assert grape_pot.math_results({"answer": "\\frac{1}{2}"}, [gen("print('\\\\frac{1}{2}')")]) == {"exact_match": 1}
    assert grape_pot.math_results({"answer": "3"}, [gen("print(4)")]) == {"exact_match": 0}
    assert grape_pot.gsm_results({"answer": "18"}, [gen("(16 - 3 - 4) * 2.0")]) == {"exact_match": 1}  # 18.0 == 18
    assert grape_pot.gsm_results({"answer": "1,000"}, [gen("print(1000)")]) == {"exact_match": 1}
    assert grape_pot.gsm_results({"answer": "18"}, ["I think 18 apples"]) == {"exact_match": 0}
    assert grape_pot.theoremqa_results({"Answer": "True"}, [gen("print(2 > 1)")]) == {"exact_match": 1}
    assert grape_pot.theoremqa_results({"Answer": "0.5"}, [gen("1 / 3")]) == {"exact_match": 0}
    assert "Python interpreter" in grape_pot.gsm_text({"question": "How many?"})
    assert grape_pot.gsm_text({"question": "How many?"}).endswith("How many?\nAnswer:")
