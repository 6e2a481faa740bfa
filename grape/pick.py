"""`grape pick`: the GRAPE selection of your own pool for one target model, in one command, without Snakemake.

    grape pick --pool my_pool.jsonl --target meta-llama/Llama-3.1-8B --out picked.jsonl
    grape pick --pool results/demo/pool/pool.jsonl --target results/demo/models/smollm2 --out picked.jsonl

It runs the workflow's own stage code, in order, with the default config's settings (`config/config.yaml`:
template, score, select) and any Hydra-style overrides (`score.max_length=2048`):
  1. the pool: a pool file the workflow wrote (`grape.contracts.POOL`: rows with `candidate_id`) is used as it is;
     anything else is imported with `data.kind: generic` (`--fields`, default `instruction`, `response`, `source`)
     and joined into a pool by `verify` with no filter (no answers to check);
  2. the target: a model folder (the workflow's `models/<name>`, or any local Hugging Face folder), a model
     config name (`config/model/<name>.yaml`, e.g. `smollm2_135m`), or a hub id;
  3. `score` (checkpointed under `--workdir`, so a killed run resumes) and `select` with the grape arm.
The output is the workflow's selection format (`SELECTION`: prompt/completion, messages, text, ...).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Mapping

from grape import config as gconfig


def is_pool_file(path: str) -> bool:
    """A JSONL the workflow's verify stage wrote (it has candidate ids and the correctness flag)."""
    p = Path(path)
    if not p.is_file() or not p.name.endswith(".jsonl"):
        return False
    with open(p, "rb") as fh:
        first = next((line for line in fh if line.strip()), b"{}")
    row = json.loads(first)
    return isinstance(row, dict) and {"candidate_id", "instruction_id", "correct"} <= set(row)


def model_folder(target: str, workdir: Path) -> str:
    """A folder the score stage can load, for a folder, a model config name, or a hub id."""
    from grape import models

    if Path(target).is_dir():
        return target
    config_file = gconfig.CONFIG_DIR / "model" / f"{target}.yaml"
    if config_file.exists():
        import yaml

        cfg = yaml.safe_load(config_file.read_text())
    else:
        cfg = {"kind": "hf", "path": target, "revision": None, "prompt_format": "plain", "trust_remote_code": False}
    out = workdir / "models" / Path(target).name
    if not out.exists():
        models.materialise(Path(target).name, cfg, out)
    return str(out)


def pool_file(source: str, fields: Mapping, cfg: Mapping, workdir: Path) -> tuple[str, dict]:
    from grape import data, verify

    if is_pool_file(source):
        return source, {"pool": "as given"}
    params = {"seed": cfg["seed"], "data": {**cfg["data"], "kind": "generic", "path": source, "fields": dict(fields)}}
    train = workdir / "data" / "train.jsonl"
    counts = data.run(params, str(train), str(workdir / "data" / "test.jsonl"), str(workdir / "data" / "dropped.jsonl"))
    pool = workdir / "pool" / "pool.jsonl"
    verify.run(
        {"verify": {"drop_incorrect": False, "unverifiable": "keep"}, "sources": []},
        str(train),
        [],
        str(pool),
        str(workdir / "pool" / "verify_counts.json"),
    )
    return str(pool), {"import": counts}


def run(
    pool: str,
    target: str,
    out: str,
    k: str | int | None = None,
    backend: str | None = None,
    fields: Mapping | None = None,
    overrides: list[str] = (),
    workdir: str | None = None,
) -> dict:
    from grape import score, select

    extra = [f"select.k={k}"] if k is not None else []
    extra += [f"score.backend={backend}"] if backend else []
    cfg = gconfig.compose("demo", [*overrides, *extra])
    fields = fields or {"instruction": "instruction", "response": "response", "source": "source"}
    with tempfile.TemporaryDirectory(prefix="grape-pick-") as tmp:
        work = Path(workdir) if workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        pool_path, counts = pool_file(pool, fields, cfg, work)
        folder = model_folder(target, work)
        scores, skipped = work / "scores" / "target.jsonl", work / "scores" / "target.skipped.jsonl"
        sp = {
            "seed": cfg["seed"],
            "threads": cfg["threads"],
            "target": "target",
            "score": {**cfg["score"], "shards": 1},
        }
        counts["score"] = score.run({**sp, "template": cfg["template"]}, folder, pool_path, str(scores), str(skipped))
        params = {"seed": cfg["seed"], "arm": "grape", "target": "target", "select": cfg["select"]}
        counts["select"] = select.run({**params, "template": cfg["template"]}, pool_path, str(scores), out)
    return counts
