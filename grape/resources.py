"""What each job asks a cluster for, derived from the experiment config: one place, read by the rules and printed
by `grape resources` (the table in the README's "Running on SLURM").

Model-free jobs (compose, data, verify, select, score gather, report, prefetch) ask for `resources.cpu_job`.
Model jobs (sample per source, score per target and shard, sft per target and arm, evaluate per model) ask for
GPUs by `resources.gpus`:
- `0`: none, a CPU run: `threads` cores and `resources.mem_mb`;
- a number: that many for every model job;
- `auto`: sized per model from its parameter count (`models.<name>.params_b`, billions) by the rules below, in
  powers of two (tensor parallel sizes must divide the attention heads) up to `resources.gpus_per_node`.

GPU memory a job needs (bf16 weights, 2 bytes per parameter; W = 2 x params_b GB):
- sample, score, evaluate (inference): 1.3 W + 4 GB: weights, then KV cache / activations / one chunk of logits;
- sft, `sft.method: full`: 18 bytes per parameter, sharded over the GPUs (FSDP / ZeRO-3): bf16 weights and
  gradients (4) + fp32 master weights and two AdamW moments (12) + ~10% activations with gradient checkpointing;
  and at least `resources.sft_min_gpus` processes (the paper: 4, for global batch 256 = micro 2 x accum 32 x 4);
- sft, `sft.method: lora`: 1.5 W + 4 GB (frozen weights, small adapters and their optimizer state).
A need above one node (`over_node`: e.g. Llama-3.1-405B at bf16, ~1 TB) is capped at the node and marked: such a
model needs FP8 weights (its `-FP8` release) or a multi-node engine, which the table says.
Host memory: `resources.mem_mb_per_gpu` per GPU, and never less than 1.2 x the weights (safetensors are mapped
while loading), up to a whole node's share. CPUs: `resources.cpus_per_gpu` per GPU. Runtime: `resources.runtime.<stage>` minutes.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

MODEL_STAGES = ("sample", "score", "sft", "evaluate")
CPU_STAGES = ("compose", "data", "model", "verify", "select", "score_gather", "report", "prefetch")


def params_b(cfg: Mapping, name: str) -> float:
    """Billions of parameters of model `name`: `params_b` in its config, else from a random model's shape, else
    from a hub id that states it (`Llama-3.1-8B` -> 8; `Mixtral-8x7B` -> 56, an upper bound)."""
    m = cfg["models"][name]
    if m.get("params_b"):
        return float(m["params_b"])
    if m["kind"] == "random":
        h, n, v, f = m["hidden_size"], m["num_layers"], m["vocab_size"], m["intermediate_size"]
        return (n * (4 * h * h + 3 * h * f) + 2 * v * h) / 1e9
    found = re.search(r"(?:(\d+)x)?(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", str(m.get("path") or ""))
    if found:
        return float(found.group(2)) * int(found.group(1) or 1)
    raise ValueError(
        f"models.{name}.params_b: needed to size its jobs (resources.gpus: auto) and not stated in its path "
        f"{m.get('path')!r}; set it (billions of parameters) or set resources.gpus to a number"
    )


def _pow2(n: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1.0, n))))


def gpu_need_gb(cfg: Mapping, stage: str, model: str) -> float:
    p = params_b(cfg, model)
    weights = 2 * p
    if stage == "sft" and cfg["sft"].get("method", "lora") == "full":
        return 18 * p
    if stage == "sft":
        return 1.5 * weights + 4
    return 1.3 * weights + 4


def for_job(cfg: Mapping, stage: str, model: str | None = None) -> dict:
    """Snakemake resources of one job: cpus_per_task, mem_mb, runtime, and gpu when it gets GPUs; plus `over_node`
    (True when the model does not fit one node as configured) for the table, which the rules drop."""
    r = cfg["resources"]
    if stage not in MODEL_STAGES or (model and cfg["models"][model]["kind"] == "endpoint"):  # remote: no GPU here
        c = r["cpu_job"]
        return {"cpus_per_task": c["cpus"], "mem_mb": c["mem_mb"], "runtime": c["runtime"]}
    runtime = r["runtime"][stage]
    gpus, over = r["gpus"], False
    if gpus == "auto":
        need = gpu_need_gb(cfg, stage, model)
        gpus = _pow2(need / r["gpu_mem_gb"])
        if stage == "sft":
            gpus = max(gpus, r["sft_min_gpus"])
        over = gpus > r["gpus_per_node"]
        gpus = min(gpus, r["gpus_per_node"])
    if not gpus:
        return {"cpus_per_task": cfg["threads"], "mem_mb": r["mem_mb"], "runtime": runtime}
    weights_mb = 2 * params_b(cfg, model) * 1024 if r["gpus"] == "auto" else 0
    out = {
        "cpus_per_task": gpus * r["cpus_per_gpu"],
        "mem_mb": int(min(max(gpus * r["mem_mb_per_gpu"], 1.2 * weights_mb), r["gpus_per_node"] * r["mem_mb_per_gpu"])),
        "runtime": runtime,
        "gpu": gpus,
    }
    if over:
        out["over_node"] = True
    return out


def rule_resources(cfg: Mapping, stage: str, model: str | None = None) -> dict:
    """`for_job` without the table-only keys, for a rule's `resources:`."""
    return {k: v for k, v in for_job(cfg, stage, model).items() if k != "over_node"}


def jobs(cfg: Mapping) -> list[dict]:
    """One line per kind of job the experiment runs: stage, model, what it asks for."""
    out = [{"stage": s, "model": "", **for_job(cfg, s)} for s in ("data", "verify", "select", "report")]
    for stage, names in (("sample", cfg["sources"]), ("score", cfg["targets"]), ("sft", cfg["targets"])):
        out += [{"stage": stage, "model": n, **for_job(cfg, stage, n)} for n in names]
    out += [{"stage": "evaluate", "model": n, **for_job(cfg, "evaluate", n)} for n in cfg["targets"]]
    return out


def table(cfg: Mapping) -> str:
    """A Markdown table of `jobs` (what `grape resources` prints)."""
    lines = [
        f"Jobs of experiment `{cfg['name']}` (resources.gpus: {cfg['resources']['gpus']}; "
        f"{cfg['resources']['gpu_mem_gb']} GB per GPU, {cfg['resources']['gpus_per_node']} per node)",
        "",
        "| stage | model | params (B) | GPUs | CPUs | memory (GB) | runtime (min) | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for j in jobs(cfg):
        size = f"{params_b(cfg, j['model']):.3g}" if j["model"] else ""
        note = "exceeds one node at bf16: use FP8 weights or a multi-node engine" if j.get("over_node") else ""
        lines.append(
            f"| {j['stage']} | {j['model']} | {size} | {j.get('gpu', 0)} | {j['cpus_per_task']} | "
            f"{j['mem_mb'] / 1000:.0f} | {j['runtime']} | {note} |"
        )
    return "\n".join(lines)
