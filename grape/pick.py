"""`grape pick`: the GRAPE selection of your own pool for one target model, in one command, without Snakemake.

    grape pick --pool my_pool.jsonl --target meta-llama/Llama-3.1-8B --out picked.jsonl
    grape pick --pool results/demo/pool/pool.jsonl --target results/demo/models/smollm2 --out picked.jsonl

It runs the workflow's own stage code, in order, with the default config's settings (`config/config.yaml`:
template, score, select) and any Hydra-style overrides (`score.max_length=2048`):
  1. the pool: a pool file the workflow wrote (`grape.contracts.POOL`: rows with `candidate_id`) is used as it is;
     anything else is imported with `data.kind: generic` (`--fields`, default `instruction`, `response`, `source`)
     and joined into a pool by `verify` with no filter (no answers to check);
  2. the target: a model folder (the workflow's `models/<name>`, or any local Hugging Face folder), a model
     config name (`config/model/<name>.yaml`, e.g. `smollm2_135m`), or a hub id; unlike the workflow's jobs, pick
     downloads a hub model or dataset that is not in the cache, unless the environment says HF_HUB_OFFLINE=1;
  3. `score` (checkpointed under `--workdir`, so a killed run resumes) and `select` with the grape arm.
The output is the workflow's selection format (`SELECTION`: prompt, completion, messages, instruction_id,
candidate_id, source, mean_logprob, task), with its provenance beside it (`<out>.meta.json`: the settings, the
target, the sha256 of the pool, the target and the output).
"""

from __future__ import annotations

import json
import tempfile
import time
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
    try:
        row = json.loads(first)
    except ValueError:  # not JSON Lines: the import says where and why
        return False
    return isinstance(row, dict) and {"candidate_id", "instruction_id", "correct"} <= set(row)


def target_model(target: str, workdir: Path) -> tuple[str, dict]:
    """(a folder the score stage can load, what identifies the model for provenance) for a folder, a model config
    name, or a hub id (downloaded when missing from the cache and the environment allows it). A local folder is
    hashed as an input; otherwise the record holds its model config and, for a hub model, the cached commit it
    loads from, for a built one (`random`, `gguf_package`) the sha256 of each built file."""
    from grape import hub, models
    from grape.provenance import sha256_path

    if Path(target).is_dir():
        return target, {}
    config_file = gconfig.CONFIG_DIR / "model" / f"{target}.yaml"
    if config_file.exists():
        import yaml

        cfg = yaml.safe_load(config_file.read_text())
    else:
        cfg = {"kind": "hf", "path": target, "revision": None, "prompt_format": "plain", "trust_remote_code": False}
    if cfg["kind"] == "hf":
        fetch_model(cfg["path"], cfg.get("revision"))
    out = workdir / "models" / Path(target).name
    if not out.exists():
        models.materialise(Path(target).name, cfg, out)
    record = {"model": cfg}
    if cfg["kind"] == "hf":
        record["commit"] = None if Path(cfg["path"]).exists() else hub.cached_commit(cfg["path"], cfg.get("revision"))
    else:
        built = sorted(f for f in out.rglob("*") if f.is_file() and f.name != "grape_meta.json")
        record["sha256"] = {str(f.relative_to(out)): sha256_path(f) for f in built}
    return str(out), record


def fetch_model(path: str, revision: str | None) -> None:
    """A hub model into the cache unless it is there (or `path` is a local folder); offline (HF_HUB_OFFLINE=1) and
    missing: an error whose way out is HF_HUB_OFFLINE=0. A local-looking path that does not exist: file not found."""
    from grape import hub, runtime

    if not hub.is_hub_id(path) or hub.model_available(path, revision):
        return
    if runtime.hub_offline():
        raise ValueError(hub.missing_message("model", path, revision, None))
    hub.download_model(path, revision)


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
    from grape import provenance, score, select

    t0 = time.time()
    provenance.clear_meta(out)  # a failed run leaves no record of an earlier one beside `out`
    extra = [f"select.k={k}"] if k is not None else []
    extra += [f"score.backend={backend}"] if backend else []
    cfg = gconfig.compose("demo", [*overrides, *extra])
    fields = fields or {"instruction": "instruction", "response": "response", "source": "source"}
    settings = {
        "pool": pool,
        "target": target,
        "k": k,
        "backend": backend,
        "fields": dict(fields),
        "overrides": list(overrides),
        **{key: cfg[key] for key in ("seed", "template", "score", "select")},
    }
    with tempfile.TemporaryDirectory(prefix="grape-pick-") as tmp:
        work = Path(workdir) if workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        pool_path, counts = pool_file(pool, fields, cfg, work)
        folder, settings["target_model"] = target_model(target, work)
        scores, skipped = work / "scores" / "target.jsonl", work / "scores" / "target.skipped.jsonl"
        # the workflow's own slices (grape.config.stage_params) for a target named `target` and the grape arm
        job = {**cfg, "targets": ["target"], "select": {**cfg["select"], "arms": ["grape"]}}
        sp = gconfig.stage_params(job, "score", target="target")
        sp["score"]["shards"] = 1
        counts["score"] = score.run(sp, folder, pool_path, str(scores), str(skipped))
        params = gconfig.stage_params(job, "select", target="target", arm="grape")
        counts["select"] = select.run(params, pool_path, str(scores), out)
        inputs = {"pool": pool} if Path(pool).exists() else {}  # a hub id: its import is `pool_scored`
        inputs.update({"pool_scored": pool_path} if pool_path != pool else {})
        inputs.update({"target": folder} if folder == target else {})
        counts["seconds"] = round(time.time() - t0, 2)
        provenance.write_meta(out, "pick", settings, inputs, counts)  # hashed while the workdir still exists
    return counts
