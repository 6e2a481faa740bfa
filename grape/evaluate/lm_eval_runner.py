"""lm-evaluation-harness: every benchmark whose task names no other runner, `local` included.

The task or group (`evaluate.benchmarks.<name>.task`) runs with `simple_evaluate` on the job's loaded model, its
per-problem rows logged for the report's paired intervals.

A runner is a module with NAME and `run(lm, name, b, ctx) -> entry` (the benchmark's entry of the evaluation file:
task, metric, accuracy, n, samples), and optionally `not_run(name, b, e) -> reason | None`, `reads(tm, name, b)`
(the datasets it loads: prefetch fetches them, the job checks them offline before its model loads), `check(name,
b)` (raise before the model loads), `needs(name, b)` (prefetch items of its own), `SHARED` (the shared `evaluate`
settings it reads), `note(res)` and `extra_rows(res, name)` (the report's). `ctx`: tm (lm-eval's task index), seed,
e (the job's `evaluate` settings), prompt (the plain template's), model (a label for the model).
"""

from __future__ import annotations

from typing import Mapping

from grape.evaluate import bench_data

NAME = "lm_eval"
# Tasks whose data is not on the hub: run only when the benchmark names a local copy (`dataset`, `package_file`).
NEEDS_LOCAL_COPY = {
    "grape_leetcode": "set evaluate.benchmarks.leetcode.download {url, sha256} to the Eurus LeetCode set (the paper "
    "configs do: OpenBMB/Eurus eval/Coding/leetcode/leetcode-test.json at a pinned commit, fetched by prefetch) or "
    ".dataset to a local copy (README, Evaluation)",
}


def not_run(name: str, b: Mapping, e: Mapping) -> str | None:
    if b["task"] in NEEDS_LOCAL_COPY and not (b.get("dataset") or b.get("package_file") or b.get("download")):
        return f"not run: no hub copy; {NEEDS_LOCAL_COPY[b['task']]}"
    return None


def reads(tm, name: str, b: Mapping) -> list[dict]:
    return [] if name == "local" else bench_data.reads(tm, name, b, bench_data.local_copy(name, b))


def _spec(tm, name: str, b: Mapping):
    """What lm-eval is asked to run for one benchmark: the task name, or, where a local copy is named, the task's
    own full config (its YAML, includes and `!function`s resolved by lm-eval's loader) with the dataset settings
    replaced. lm-eval 0.4.13 reads a dict spec as a new inline task, not as overrides of a registered one."""
    over = bench_data.local_copy(name, b)
    if not over:
        return b["task"]
    from lm_eval.tasks._yaml_loader import load_yaml  # pinned lm-eval; its one YAML loader

    entry = tm.task_index.get(b["task"])
    if entry is None or entry.yaml_path is None or entry.kind.name != "TASK":
        raise ValueError(
            f"evaluate.benchmarks.{name}: a local dataset can replace the data of one lm-eval task, and "
            f"{b['task']!r} is {'unknown' if entry is None else 'a ' + entry.kind.name.lower()}: name a member task"
        )
    cfg = load_yaml(entry.yaml_path, resolve_func=True)
    for key in ("tag", "group"):
        cfg.pop(key, None)
    return {**cfg, **over}


def _samples(res: Mapping, metric: str, filt: str, local: bool) -> list[dict]:
    """Per-problem rows of one benchmark (every leaf task of a group), in task then document order."""
    rows = []
    for task in sorted(res.get("samples", {})):
        for s in sorted(res["samples"][task], key=lambda s: s["doc_id"]):
            if s.get("filter", filt) != filt:
                continue
            if metric not in s:
                raise ValueError(  # the benchmark's `metric` setting names a metric lm-eval does not log for it
                    f"lm-eval logged no {metric!r} for {task}; its metrics: {list(s.get('metrics', []))}"
                )
            doc = s.get("doc", {})
            resp = s["resps"][0][0] if s.get("resps") and s["resps"][0] else ""
            extracted = s["filtered_resps"][0] if s.get("filtered_resps") else ""
            rows.append(
                {
                    "doc_id": s["doc_id"],
                    "task": task,
                    "id": str(doc["id"]) if local else f"{task}:{s['doc_id']}",
                    "target": str(s.get("target", "")),
                    "output": resp if isinstance(resp, str) else str(resp),
                    "extracted": extracted if isinstance(extracted, str) else str(extracted),
                    "correct": float(s[metric]),
                }
            )
    return rows


def run(lm, name: str, b: Mapping, ctx: Mapping) -> dict:
    import lm_eval

    seed, e = ctx["seed"], ctx["e"]
    gen = {"max_gen_toks": b["max_gen_toks"]} if b.get("max_gen_toks") else None
    res = lm_eval.simple_evaluate(
        model=lm,
        tasks=[_spec(ctx["tm"], name, b)],
        task_manager=ctx["tm"],
        num_fewshot=b.get("num_fewshot"),
        limit=b.get("limit"),
        gen_kwargs=gen,
        log_samples=True,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        apply_chat_template=e["apply_chat_template"],
        confirm_run_unsafe_code=bool(b.get("code")),
    )
    filt = b.get("filter") or "none"
    samples = _samples(res, b["metric"], filt, local=name == "local")
    if not samples:
        raise ValueError(f"evaluate: benchmark {name!r} ({b['task']}) gave no samples for filter {filt!r}")
    return {
        "task": b["task"],
        "metric": f"{b['metric']},{filt}",
        "accuracy": sum(s["correct"] for s in samples) / len(samples),  # for a group: over all its tasks' problems
        "n": len(samples),
        "num_fewshot": b.get("num_fewshot"),
        "limit": b.get("limit"),
        "lm_eval_results": res["results"],
        "samples": samples,
    }
