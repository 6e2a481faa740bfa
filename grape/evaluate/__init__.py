"""The `evaluate` stage: lm-evaluation-harness on every benchmark of the experiment, one model at a time.

Reads: `data/test.jsonl` (`grape.contracts.TEST`) and a model folder (an untuned target or a tuned one).
Writes: the lm-eval task YAML of the held-out split (`write_task`, once per experiment) and
`evaluate/<target>/<arm>/<benchmark>.json` (one job per model and benchmark: the workflow hands each job one
benchmark's settings, `grape.config.evaluate_settings`): per benchmark, the score, lm-eval's own metrics and the
per-problem `samples` (`EVAL_SAMPLE` rows) the report's paired bootstrap needs.

Benchmarks (`evaluate.benchmarks`, chosen per experiment by `evaluate.tasks`):
- `local`: the experiment's held-out problems; greedy generation with the same plain template the models were tuned
  on, exact match of the last number. Its YAML is written per experiment with an absolute `data_files` path
  (lm-eval resolves relative ones against the working directory, not the YAML).
- the paper's benchmarks: lm-eval's own tasks where they exist (`minerva_math`, `gsm_plus`, `bbh_cot_fewshot`,
  `mmlu`), ours in `grape/evaluate/lm_eval_tasks/` where they do not or cannot run offline (HumanEval, MBPP and LeetCode
  with an offline pass@1, TheoremQA). Each runs in its own `simple_evaluate` call on one loaded model, so limits,
  shot counts and generation lengths are per benchmark. `dataset` / `package_file` point a task at a local copy.
- AlpacaEval 2 (`task: alpaca_eval`) is not an lm-eval task: `grape.evaluate.alpaca` answers its instructions with the same
  loaded model and has the configured judge endpoint compare them with the reference answers (alpaca_eval's own
  judge protocol and win rates); without a judge it is recorded as not run.
- Code benchmarks execute model-written code: they run only when `evaluate.allow_code_execution` is true (then
  `HF_ALLOW_CODE_EVAL=1` and lm-eval's `confirm_run_unsafe_code`), and only in `grape.evaluate.sandbox` (`evaluate.sandbox`;
  a node where it does not work is refused before the model loads, unless `sandbox: none` is set); otherwise they
  are recorded as not run, and the report says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import yaml

from grape import plugins
from grape.contracts import TEST
from grape.evaluate import bench_data
from grape.io import atomic_path, read_jsonl, write_json
from grape.template import Template

TASK_PREFIX = "grape_"
# The last number in the generation (integers, decimals, thousands separators).
NUMBER_REGEX = r"(-?\d[\d,]*(?:\.\d+)?)"


def task_name(experiment: str) -> str:
    return TASK_PREFIX + "".join(ch if ch.isalnum() else "_" for ch in experiment)


def write_task(params: Mapping, test_path: str, out: str) -> dict:
    """Write the lm-eval task YAML for `test_path` (checked first: lm-eval would fail on it with less to go on)."""
    e = params["evaluate"]
    needed = "the held-out problems written by the data stage" if "local" in e["tasks"] else None
    rows = read_jsonl(test_path, TEST, unique="id", non_empty=needed)
    template = Template.from_config(params["template"])
    doc_to_text = template.prompt.replace("{instruction}", "{{instruction}}")
    if e["local_mode"] == "choice":
        task = _choice_task(params, rows, test_path, out, doc_to_text)
    else:
        task = _generate_task(params, test_path, doc_to_text)
    with atomic_path(out) as tmp:
        tmp.write_text(yaml.safe_dump(task, sort_keys=False, allow_unicode=True))
    return task


def _generate_task(params: Mapping, test_path: str, doc_to_text: str) -> dict:
    """`evaluate.local_mode: generate`: greedy generation, exact match of the last number against the answer."""
    e = params["evaluate"]
    return {
        "task": task_name(params["name"]),
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(Path(test_path).resolve())}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": doc_to_text,
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": list(e["until"]), "max_gen_toks": e["max_gen_toks"], "do_sample": False},
        "filter_list": [
            {
                "name": "last_number",
                "filter": [
                    {"function": "regex", "regex_pattern": NUMBER_REGEX, "group_select": -1},
                    {"function": "take_first"},
                ],
            }
        ],
        "metric_list": [
            {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_punctuation": False}
        ],
        "metadata": {"version": 1.0},
    }


def _number(text: str) -> str:
    return str(int(float(text))) if float(text).is_integer() else f"{float(text):g}"


def distractors(answer, n: int = 3, key: str | None = None) -> list[str]:
    """Wrong answers near a numeric answer (off by one or two, by ten, doubled): what a model that almost solved
    the problem would say, so that picking the right one needs the arithmetic. With `key` (the problem id) the n
    are drawn from those near misses by a seed of the key, so no fixed offset is always the wrong one."""
    v = float(str(answer).replace(",", ""))
    out = []
    for x in (v + 1, v - 1, v + 10, v - 10, 2 * v, v + 2, v - 2, v + 100):
        s = _number(str(x))
        if s != _number(str(v)) and s not in out:
            out.append(s)
    if key is not None:
        import hashlib
        import random

        random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")).shuffle(out)
    return out[:n]


def _choice_task(params: Mapping, rows: list[dict], test_path: str, out: str, doc_to_text: str) -> dict:
    """`evaluate.local_mode: choice`: the held-out problems as a loglikelihood task. Each problem's choices are the
    reference's "The answer is N." and `evaluate.local_choices - 1` near misses; the model picks the one it finds most likely. No
    generation, so several hundred problems cost less than 50 generated ones, and the paired intervals between
    arms get narrow enough to tell arms apart. Position does not matter for loglikelihood choice (each choice is
    scored alone), so the reference is choice 0. The choices file is written beside the YAML."""
    choices_path = Path(out).with_name("choices.jsonl")
    with atomic_path(choices_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for i, r in enumerate(rows, 1):
                try:
                    wrong = distractors(r["answer"], params["evaluate"]["local_choices"] - 1, key=str(r["id"]))
                except ValueError:
                    raise ValueError(
                        f"{test_path}:{i}: answer {r['answer']!r} is not a number; evaluate.local_mode choice needs "
                        "numeric answers (use local_mode: generate)"
                    ) from None
                opts = [f"The answer is {a}." for a in [_number(str(r["answer"]).replace(",", "")), *wrong]]
                fh.write(
                    json.dumps({"id": r["id"], "instruction": r["instruction"], "choices": opts, "gold": 0}) + "\n"
                )
    return {
        "task": task_name(params["name"]),
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(choices_path.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": doc_to_text,
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def benchmark_plan(params: Mapping, task_yaml: str | None) -> dict:
    """name -> the benchmark's settings for every benchmark of `evaluate.tasks`, or the reason it is not run (code
    execution not allowed)."""
    e = params["evaluate"]
    plan = {}
    for name in e["tasks"]:
        if name == "local":
            if not task_yaml:
                raise ValueError("evaluate: the local benchmark needs its task YAML (--task, grape evaluate-task)")
            choice = e["local_mode"] == "choice"
            plan[name] = {
                "task": yaml.safe_load(Path(task_yaml).read_text())["task"],
                "metric": "acc" if choice else "exact_match",
                "filter": "none" if choice else "last_number",
                "code": False,
                "limit": e["limit"],
            }
            continue
        if name not in e["benchmarks"]:
            raise ValueError(
                f"evaluate.tasks names {name!r}, which is not in evaluate.benchmarks ({sorted(e['benchmarks'])})"
            )
        b = e["benchmarks"][name]
        why = getattr(plugins.benchmark_runner(b), "not_run", lambda *_: None)(name, b, e)
        if why:
            plan[name] = why
        elif b.get("code") and not e["allow_code_execution"]:
            plan[name] = "not run: it executes model-written code; set evaluate.allow_code_execution: true to run it"
        else:
            plan[name] = b
    return plan


def preflight(tm, plan: Mapping, experiment: str | None) -> None:
    """Every dataset the benchmarks to run read is loadable offline (`grape.evaluate.bench_data`), else stop naming
    them and the prefetch command; each runner's own checks (AlpacaEval's GLM data) first."""
    from grape import hub

    items = []
    for name, b in plan.items():
        if isinstance(b, str):
            continue
        runner = plugins.benchmark_runner(b)
        if hasattr(runner, "check"):
            runner.check(name, b)
        items += runner.reads(tm, name, b) if hasattr(runner, "reads") else []
    gone = bench_data.missing(items)
    if gone:
        raise ValueError(
            f"evaluate: {len(gone)} benchmark dataset(s) not available offline (HF_HOME="
            f"{os.environ.get('HF_HOME') or 'default'}): {'; '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}. "
            f"On a machine with internet run `{hub.command(experiment)}` first (it fetches every benchmark's "
            "datasets), or point the benchmark at a local copy (evaluate.benchmarks.<name>.dataset)"
        )


def run(params: Mapping, model_dir: str, task_yaml: str | None, out: str) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from grape import model_folder, runtime

    runtime.set_offline()
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    runtime.setup(params["threads"])
    e, seed = params["evaluate"], params["seed"]
    plan = benchmark_plan(params, task_yaml)
    code = [n for n, b in plan.items() if not isinstance(b, str) and b.get("code")]
    if code:  # before the model loads: a node without the sandbox is refused in seconds, not after a 7B load
        from grape.evaluate import sandbox

        sandbox.configure(e["sandbox"], sandbox.Limits.from_config(e["sandbox_limits"]))
        sandbox.require(e["sandbox"])
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    path, manifest = model_folder.resolve(model_dir)
    dev = runtime.device()
    model_args = {
        "pretrained": path,
        "dtype": runtime.dtype_name(dev),
        "trust_remote_code": manifest.get("trust_remote_code", False),
    }
    if manifest.get("revision"):
        model_args["revision"] = manifest["revision"]
    runners = {n: plugins.benchmark_runner(b) for n, b in plan.items() if not isinstance(b, str)}
    lm_evals = [plan[n]["task"] for n, r in runners.items() if r.NAME == "lm_eval"]
    defaults = any(not t.startswith(TASK_PREFIX) for t in lm_evals)  # lm-eval's own tasks: its full index
    tm = bench_data.task_manager([str(Path(task_yaml).parent.resolve())] if task_yaml else [], defaults)
    preflight(
        tm, plan, params.get("experiment") or params["name"]
    )  # before the model loads: minutes, not a 7B load, to learn it
    lm = HFLM(**model_args, batch_size=e["batch_size"], device=dev)
    ctx = {"tm": tm, "seed": seed, "e": e, "prompt": Template.from_config(params["template"]).prompt,
           "model": f"grape:{Path(model_dir).name}"}  # fmt: skip
    results, summary = {}, {}
    for name, b in plan.items():
        if isinstance(b, str):
            results[name] = {"not_run": b}
            summary[name] = None
            continue
        results[name] = runners[name].run(lm, name, b, ctx)
        if b.get("code"):  # where its programs ran: the report marks `none` as unsandboxed
            results[name]["sandbox"] = e["sandbox"]
        summary[name] = round(results[name]["accuracy"], 4)
    write_json(
        out,
        {
            "model": str(model_dir),
            "model_args": model_args,
            "batch_size": e["batch_size"],
            "apply_chat_template": e["apply_chat_template"],
            "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
            "benchmarks": results,
        },
    )
    return {"accuracy": summary}
