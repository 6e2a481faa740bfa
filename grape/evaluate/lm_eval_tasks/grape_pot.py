"""Program of thought (PoT) for MATH, GSM-Plus and TheoremQA, run as the Eurus evaluation suite the paper used runs it.

What carries over from that suite (OpenBMB/Eurus `eval/Math/*/evaluate_*_pot.py`, `eval/utils/python_interpreter.py`):
the prompt (`PROMPT`: a Python interpreter is offered, then "Solve the following math problem step-by-step. Simplify
your answer as much as possible."), greedy decoding, and how an answer comes out of a generation: each ```python
block runs on its own in a fresh process with a 5-second limit, its last line wrapped in print() when that line
prints nothing; the printed output of the last block is the answer (empty when it fails or runs out of time); a
generation with no code block is answered as written; then the text after a final "answer:" or inside the last
\\boxed{} is taken. Only the last block is run here: each block runs alone, so the others cannot change its output.

The answer is judged by the CoT variant's equivalence: MATH by lm-eval's `hendrycks_math.is_equiv` (grape_math_cot);
GSM-Plus and TheoremQA by the CoT tasks' exact-match normalisation (case, commas, $ and a final period ignored), and
equal numbers count as equal (a program prints 5.0 where the reference says 5).

Programs run in the sandbox every model-written program runs in (`grape.evaluate.sandbox`: bubblewrap, no network, no
environment, limits, the 5-second wall limit). The suite runs these tasks only when `evaluate.allow_code_execution`
is true.
The prompt is wrapped in the suite's plain template (Question:/Answer:), the one the targets were fine-tuned on.
"""

from __future__ import annotations

import re

from lm_eval.tasks.hendrycks_math.utils import is_equiv, last_boxed_only_string, remove_boxed

PROMPT = (
    "Tool available:\n[1] Python interpreter\nWhen you send a message containing Python code to python, it will be "
    "executed in a stateful Jupyter notebook environment.\nSolve the following math problem step-by-step.\n"
    "Simplify your answer as much as possible.\n"
)
TIMEOUT_S = 5.0  # the suite's PythonREPL(timeout=5)
CODE = re.compile(r"```python(.*?)```", re.S)
NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


def _text(question: str) -> str:
    return f"Question: {PROMPT}{question}\nAnswer:"


def math_text(doc: dict) -> str:
    return _text(doc["problem"])


def gsm_text(doc: dict) -> str:
    return _text(doc["question"])


def theoremqa_text(doc: dict) -> str:
    return _text(doc["Question"])


def run_program(program: str, timeout: float | None = None) -> tuple[str, str]:
    """(status, printed output) of one program in the suite's sandbox (`grape.evaluate.sandbox`: a fresh interpreter, no
    network, no environment, no writable path but its own tmp): "ok", "error" (then the error) or "timeout"."""
    from grape.evaluate import sandbox

    lines = program.strip().split("\n")
    if lines and "print(" not in lines[-1]:  # the suite shows the last expression's value, as a notebook would
        lines[-1] = f"print({lines[-1]})"
    got = sandbox.run("\n".join(lines), timeout or TIMEOUT_S)
    return (got.status, got.stdout if got.status == "ok" else got.error if got.status == "error" else "")


def answer_of(generation: str) -> str:
    """The answer a PoT generation gives: the last code block's printed output (run), else the text; then after a
    final "answer:" or inside the last \\boxed{}."""
    blocks = CODE.findall(generation)
    if blocks:
        status, printed = run_program(blocks[-1])
        text = printed.strip() if status == "ok" else ""
    else:
        text = generation
    for marker in ("answer:\n", "answer: "):
        at = text.lower().rfind(marker)
        if at != -1:
            text = text[at + len(marker) :].strip()
    boxed = last_boxed_only_string(text)
    return (remove_boxed(boxed) or "").strip() if boxed else text.strip()


def _normal(s: str) -> str:
    """The CoT tasks' exact_match normalisation: case, commas, $ and a final period ignored."""
    return re.sub(r"\.$", "", str(s).replace(",", "").replace("$", "").strip()).strip().lower()


def same(answer: str, reference) -> bool:
    a, r = _normal(answer), _normal(reference)
    if a == r:
        return True
    if NUMBER.match(a) and NUMBER.match(r):
        x, y = float(a), float(r)
        return abs(x - y) <= 1e-6 * max(1.0, abs(y))
    return False


def math_results(doc: dict, results: list[str]) -> dict[str, int]:
    return {"exact_match": int(is_equiv(answer_of(results[0]), doc["answer"]))}


def gsm_results(doc: dict, results: list[str]) -> dict[str, int]:
    return {"exact_match": int(same(answer_of(results[0]), doc["answer"]))}


def theoremqa_results(doc: dict, results: list[str]) -> dict[str, int]:
    return {"exact_match": int(same(answer_of(results[0]), doc["Answer"]))}
