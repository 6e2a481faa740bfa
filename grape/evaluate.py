"""The `evaluate` stage: lm-evaluation-harness on the held-out split, one model at a time.

Reads: `data/test.jsonl` (`grape.contracts.TEST`) and a model folder (an untuned target or a tuned one).
Writes: the lm-eval task YAML for the test split (`write_task`, once per experiment) and
`evaluate/<target>/<arm>.json` (accuracy, lm-eval's config, per-problem `samples`: `EVAL_SAMPLE` rows).

The workflow writes an lm-eval task YAML for the local test JSONL (absolute path: lm-eval resolves
relative `data_files` against the working directory, not the YAML). Generation is greedy with the
same plain template the models were tuned on; the metric is exact match of the last number in the
output against the reference answer. Per-problem results are kept for the report's bootstrap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import yaml

from grape.contracts import TEST
from grape.io import atomic_path, read_jsonl, write_json
from grape.template import Template

TASK_PREFIX = "grape_"
# The last number in the generation (integers, decimals, thousands separators).
NUMBER_REGEX = r"(-?\d[\d,]*(?:\.\d+)?)"


def task_name(experiment: str) -> str:
    return TASK_PREFIX + "".join(ch if ch.isalnum() else "_" for ch in experiment)


def write_task(params: Mapping, test_path: str, out: str) -> dict:
    """Write the lm-eval task YAML for `test_path` (checked first: lm-eval would fail on it with less to go on)."""
    read_jsonl(test_path, TEST, unique="id", non_empty="the held-out problems written by the data stage")
    e = params["evaluate"]
    template = Template.from_config(params["template"])
    doc_to_text = template.prompt.replace("{instruction}", "{{instruction}}")
    task = {
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
    with atomic_path(out) as tmp:
        tmp.write_text(yaml.safe_dump(task, sort_keys=False, allow_unicode=True))
    return task


def run(params: Mapping, model_dir: str, task_yaml: str, out: str) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from grape import model_folder, runtime

    runtime.set_offline()
    runtime.setup(params["threads"])
    e = params["evaluate"]
    name = yaml.safe_load(Path(task_yaml).read_text())["task"]
    path, manifest = model_folder.resolve(model_dir)
    dev = runtime.device()
    model_args = {
        "pretrained": path,
        "dtype": runtime.dtype_name(dev),
        "trust_remote_code": manifest.get("trust_remote_code", False),
    }
    if manifest.get("revision"):
        model_args["revision"] = manifest["revision"]
    tm = TaskManager(include_path=str(Path(task_yaml).parent.resolve()))
    seed = params["seed"]
    res = lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=[name],
        task_manager=tm,
        batch_size=e["batch_size"],
        device=dev,
        limit=e["limit"],
        log_samples=True,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        apply_chat_template=False,
    )
    metrics = res["results"][name]
    key = next(k for k in metrics if k.startswith("exact_match,"))
    samples = [
        {
            "doc_id": s["doc_id"],
            "id": s["doc"]["id"],
            "target": s["target"],
            "output": s["resps"][0][0] if s["resps"] else "",
            "extracted": s["filtered_resps"][0],
            "correct": float(s["exact_match"]),
        }
        for s in res["samples"][name]
    ]
    samples.sort(key=lambda s: s["doc_id"])
    result = {
        "task": name,
        "metric": key,
        "accuracy": float(metrics[key]),
        "n": len(samples),
        "model": str(model_dir),
        "model_args": model_args,
        "batch_size": e["batch_size"],
        "apply_chat_template": False,
        "lm_eval_config": res.get("config", {}),
        "samples": samples,
    }
    write_json(out, result)
    return {"accuracy": result["accuracy"], "n": result["n"]}
