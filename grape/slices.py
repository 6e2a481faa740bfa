"""How a stage's config slice is cut: what determines a job's output (its params) apart from what only changes how
it runs (its run options), and the settings one benchmark's evaluation reads. Plain functions on plain data, used by
`grape.config.stage_params` and the rules (through it), and by `grape.resume`."""

from __future__ import annotations

import copy
from typing import Mapping

# Values that change how a job runs (how fast, how patiently), never what it writes. A rule passes them as
# `--run-options JSON` from its resources, which Snakemake never reruns a job for, not in its params, which it does:
# moving to a machine with more cores or tuning a retry reruns nothing. Resumed checkpoints ignore them too.
OPERATIONAL = (
    "threads",
    "sample.concurrency",
    "sample.timeout_s",
    "sample.retries",
    "sample.backoff_s",
    "sample.allow_missing",
    "sft.save_steps",
    "sft.report_to",
    "sft.keep_checkpoints",
)


def split_operational(params: Mapping) -> tuple[dict, dict]:
    """A slice as (what determines the output, the operational values `OPERATIONAL` names), both nested dicts."""
    determining, operational = copy.deepcopy(dict(params)), {}
    for dotted in OPERATIONAL:
        *parents, leaf = dotted.split(".")
        src, dst = determining, operational
        for key in parents:
            if not isinstance(src.get(key), dict):
                src = None
                break
            src, dst = src[key], dst.setdefault(key, {})
        if src is not None and leaf in src:
            dst[leaf] = src.pop(leaf)
    return determining, {k: v for k, v in operational.items() if v != {}}


def merge(base: Mapping, extra: Mapping) -> dict:
    """`base` with `extra`'s keys set, nested dicts merged (a job's params + its --run-options)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def evaluate_settings(e: Mapping, bench: str, shared: tuple[str, ...] = ()) -> dict:
    """The `evaluate` settings one benchmark's job reads: the shared generation settings it uses, its own entry,
    code execution only for a code benchmark, so adding, removing or changing another benchmark reruns nothing of
    this one. `shared`: the shared settings the benchmark's runner reads (AlpacaEval's until/max_gen_toks)."""
    out = {"tasks": [bench], "batch_size": e["batch_size"], "apply_chat_template": e["apply_chat_template"]}
    if bench == "local":
        local = {k: e[k] for k in ("until", "max_gen_toks", "limit", "local_mode", "local_choices")}
        return {**out, **local, "allow_code_execution": False}
    b = e["benchmarks"][bench]
    out.update({k: e[k] for k in shared})  # the shared settings its runner falls back to (its SHARED)
    runs_code = bool(b["code"] and e["allow_code_execution"])
    if runs_code:  # where and under which limits its programs run can change its score; nothing else's
        out.update(sandbox=e["sandbox"], sandbox_limits=dict(e["sandbox_limits"]))
    return {**out, "allow_code_execution": runs_code, "benchmarks": {bench: b}}
