"""MATH with chain of thought, the Minerva way, without lm-eval's `minerva_math` import wall.

lm-eval 0.4.13's `minerva_math` module asserts antlr4-python3-runtime 4.11 (for sympy's LaTeX parser) when it is
imported; hydra-core pins antlr4 4.9, so the suite's environment cannot import it. These tasks keep what makes the
benchmark MATH-CoT: Minerva's prompt ("Problem: ... Solution:"), lm-eval's own four Minerva chain-of-thought shots
(read from lm-eval's source, not copied here), generation to "Problem:", and the answer taken from "The final answer
is X" (else the last \\boxed{}). Equivalence is lm-eval's `hendrycks_math.is_equiv` (the MATH paper's string
normalisation: fractions, units, spaces, \\left/\\right, trailing zeros) instead of sympy's: a documented choice,
stricter on answers that are equal only symbolically.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

from lm_eval.tasks.hendrycks_math.utils import is_equiv, last_boxed_only_string, remove_boxed

FINAL = re.compile(r"[Tt]he final answer is\s*(.+?)\.?\s*(?:I hope it is correct|$)", re.S)


def _answer(solution: str) -> str:
    boxed = last_boxed_only_string(solution)
    return remove_boxed(boxed) if boxed else ""


def process_docs(dataset):
    return dataset.map(lambda d: {"problem": d["problem"], "solution": d["solution"], "answer": _answer(d["solution"])})


def doc_to_text(doc: dict) -> str:
    return "Problem:\n" + doc["problem"] + "\n\nSolution:"


@lru_cache(maxsize=1)
def list_fewshot_samples() -> list[dict]:
    """The four Minerva shots as lm-eval ships them: the literal list `minerva_math/utils.py` returns, read with
    `ast` (importing that module fails here, see the module docstring)."""
    spec = importlib.util.find_spec("lm_eval")
    path = Path(spec.origin).parent / "tasks" / "minerva_math" / "utils.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == "list_fewshot_samples":
            ret = next(n for n in ast.walk(node) if isinstance(n, ast.Return))
            return [{**s, "answer": _answer(s["solution"])} for s in ast.literal_eval(ret.value)]
    raise RuntimeError(f"{path}: no list_fewshot_samples() to take Minerva's shots from (lm-eval changed?)")


def extract(generation: str) -> str:
    m = FINAL.search(generation)
    if m:
        return m.group(1).strip().strip("$").strip()
    boxed = last_boxed_only_string(generation)
    return remove_boxed(boxed) if boxed else generation.strip()


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    return {"exact_match": int(is_equiv(extract(results[0]), doc["answer"]))}
