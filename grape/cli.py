"""`grape <stage>`: run one stage outside Snakemake (the rules call exactly these commands).

A stage gets its settings one of two ways:
- `--params JSON`: the stage's slice of the composed config (what the Snakemake rules pass, from `params:`);
- `--config FILE`: a composed config (`grape compose -o FILE`) plus the stage's names (`--target`, `--arm`, ...),
  from which the same slice is cut (`grape.config.stage_params`).
It reads only the paths given on the command line, writes its outputs atomically, and writes provenance
beside them (`<output>.meta.json`, or `grape_meta.json` inside a folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from grape import config as gconfig
from grape import plugins as gplugins
from grape import runtime, vllm_engine

# stage -> the names (wildcards) its slice depends on: CLI flag -> key in stage_params
NAMES = {
    "model": {"name": "model"},
    "sample": {"source": "source"},
    "score": {"target": "target"},
    "select": {"target": "target", "arm": "arm"},
    "sft": {"target": "target", "arm": "arm"},
}
PARAM_KEYS = {"model": "name", "source": "source", "target": "target", "arm": "arm"}


def _load(args, stage: str) -> dict:
    names = {flag: getattr(args, flag, None) for flag in NAMES.get(stage, {})}
    if args.params is not None:
        params = gconfig.parse_params(args.params)
        for flag, value in names.items():
            have = params.get(PARAM_KEYS[NAMES[stage][flag]])
            if value is not None and value != have:
                raise gconfig.ConfigError(f"--{flag} {value!r} disagrees with --params ({have!r})")
    else:
        missing = [f"--{flag}" for flag, value in names.items() if value is None]
        if missing:
            raise gconfig.ConfigError(f"grape {stage} --config needs {', '.join(missing)}")
        wc = {NAMES[stage][flag]: value for flag, value in names.items()}
        params = gconfig.stage_params(gconfig.load(args.config), stage, **wc)
    if getattr(args, "run_options", None):  # operational values (not rerun triggers: grape.config.OPERATIONAL)
        params = gconfig.merge(params, gconfig.parse_params(args.run_options))
    if getattr(args, "threads", None):
        params["threads"] = args.threads
    return gconfig.Settings(params)


def _finish(stage: str, params: dict, outputs: list[str], inputs: dict, counts: dict, t0: float) -> None:
    from grape.provenance import write_meta

    counts = {**counts, "seconds": round(time.time() - t0, 2)}
    for out in outputs:
        write_meta(out, stage, params, inputs, counts)
    print(json.dumps({"stage": stage, **counts}, default=str))


def cmd_compose(args):
    t0 = time.time()
    if args.params is not None:  # the workflow's: the determining part, and the operational values of this run
        cfg = gconfig.merge(gconfig.parse_params(args.params), gconfig.parse_params(args.run_options or "{}"))
        gconfig.validate(cfg)
    else:
        cfg = gconfig.compose(args.experiment, args.overrides)
    if args.output:
        gconfig.write_if_changed(args.output, cfg)
        _finish("compose", cfg, [args.output], {}, {}, t0)
    else:
        sys.stdout.write(gconfig.dump(cfg))


def cmd_data(args):
    from grape import data

    t0, p = time.time(), _load(args, "data")
    if not (args.test or args.below_min):
        raise gconfig.ConfigError("grape data needs --test (or --below-min: the instructions the pool leaves out)")
    counts = data.run(p, args.train, args.test, args.dropped, below_min=args.below_min)
    _finish("data", p, [args.train, *([args.test] if args.test else [])], {}, counts, t0)


def cmd_prefetch(args):
    import os

    t0 = time.time()
    if args.params is not None:
        p = gconfig.Settings(gconfig.parse_params(args.params))
    else:
        p = gconfig.stage_params(gconfig.compose(args.experiment, args.overrides), "prefetch")
    if p.get("cache_dir"):
        os.environ["HF_HOME"] = str(Path(p["cache_dir"]).resolve())
    if not args.dry_run:
        for key in runtime.OFFLINE_ENV:  # the one job that goes online
            os.environ.pop(key, None)
    from grape import prefetch

    records = prefetch.fetch(p, dry_run=args.dry_run)
    for r in records:
        print(f"{r['kind']:9} {r['name']:24} {r['id']}" + (f" [{r['config']}]" if r.get("config") else "")
              + (f" @ {r['revision']}" if r.get("revision") else ""))  # fmt: skip
    from grape.evaluate import sandbox

    checked = sandbox.node_check(p["evaluate"])
    if args.output and not args.dry_run:
        from grape.io import write_json

        write_json(args.output, {"cache": os.environ.get("HF_HOME"), "items": records, "sandbox": checked})
        _finish("prefetch", p, [args.output], {}, {"items": len(records)}, t0)


def cmd_resources(args):
    from grape import resources

    print(resources.table(gconfig.compose(args.experiment, args.overrides)))


def cmd_plugins(args):
    print(gplugins.listing(args.kind))


def cmd_model(args):
    from grape import models

    t0, p = time.time(), _load(args, "model")
    m = models.materialise(p["name"], p["model"], args.output, p.get("experiment"))
    print(json.dumps({"stage": "model", "name": p["name"], "kind": m["kind"], "seconds": round(time.time() - t0, 1)}))


def cmd_sample(args):
    from grape import sample

    t0, p = time.time(), _load(args, "sample")
    counts = sample.run(p, args.model, args.train, args.output, args.missing)
    _finish("sample", p, [args.output], {"model": args.model, "train": args.train}, counts, t0)


def cmd_verify(args):
    from grape import verify

    t0, p = time.time(), _load(args, "verify")
    counts = verify.run(p, args.train, args.candidates, args.output, args.counts, args.extend)
    inputs = {"train": args.train, **{f"candidates{i}": c for i, c in enumerate(args.candidates)}}
    _finish("verify", p, [args.output], inputs, counts, t0)


def cmd_score(args):
    from grape import score

    t0, p = time.time(), _load(args, "score")
    counts = score.run(p, args.model, args.pool, args.output, args.skipped, args.shard, args.shards)
    _finish("score", p, [args.output, args.skipped], {"model": args.model, "pool": args.pool}, counts, t0)


def cmd_reward(args):
    from grape import reward

    t0, p = time.time(), _load(args, "reward")
    counts = reward.run(p, args.model, args.pool, args.output)
    _finish("reward", p, [args.output], {"model": args.model, "pool": args.pool}, counts, t0)


def cmd_score_gather(args):
    from grape import score

    t0, p = time.time(), _load(args, "score")
    counts = score.gather(args.inputs, args.skipped_inputs, args.output, args.skipped)
    inputs = {f"shard{i}": path for i, path in enumerate(args.inputs)}
    _finish("score", p, [args.output, args.skipped], inputs, counts, t0)


def cmd_select(args):
    from grape import select

    t0, p = time.time(), _load(args, "select")
    counts = select.run(p, args.pool, args.scores, args.output)
    inputs = {"pool": args.pool, **({"scores": args.scores} if args.scores else {})}
    _finish("select", p, [args.output], inputs, counts, t0)


def cmd_sft(args):
    from grape import sft

    t0, p = time.time(), _load(args, "sft")
    counts = sft.run(p, args.model, args.selection, args.output)
    print(json.dumps({"stage": "sft", **counts, "seconds": round(time.time() - t0, 1)}, default=str))


def cmd_evaluate_task(args):
    from grape import evaluate

    t0, p = time.time(), _load(args, "evaluate_task")
    evaluate.write_task(p, args.test, args.output)
    _finish("evaluate", p, [args.output], {"test": args.test}, {}, t0)


def cmd_evaluate(args):
    from grape import evaluate

    t0, p = time.time(), _load(args, "evaluate")
    counts = evaluate.run(p, args.model, args.task, args.output)
    inputs = {"model": args.model, **({"task": args.task} if args.task else {})}
    _finish("evaluate", p, [args.output], inputs, counts, t0)


def cmd_report(args):
    from grape import report

    t0, p = time.time(), _load(args, "report")
    inputs = report.Inputs(
        args.evals, args.trained, args.selections, args.scores, args.verify_counts, args.candidates or ()
    )
    counts = report.run(p, inputs, args.output_dir, args.cluster_logs)
    files = {f"{kind}{i}": path for kind in ("evals", "trained", "selections", "scores", "candidates")
             for i, path in enumerate(getattr(inputs, kind))} | {"verify_counts": inputs.verify_counts}  # fmt: skip
    outputs = [str(Path(args.output_dir) / name) for name in ("results.csv", "summary.html")]
    _finish("report", p, outputs, files, counts, t0)


def cmd_pick(args):
    from grape import pick

    t0 = time.time()
    fields = dict(kv.split("=", 1) for kv in args.fields) if args.fields else None
    counts = pick.run(args.pool, args.target, args.out, args.k, args.backend, fields, args.overrides, args.workdir)
    print(json.dumps({"stage": "pick", **counts, "seconds": round(time.time() - t0, 1)}, default=str))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="grape", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    req, many = {"required": True}, {"required": True, "nargs": "+"}

    def stage(name, func, help_, *ios, stage_key=None):
        sp = sub.add_parser(name, help=help_)
        how = sp.add_mutually_exclusive_group(required=True)
        how.add_argument("--params", help="the stage's config slice as JSON (what the workflow passes)")
        how.add_argument("--config", help="a composed config YAML (grape compose -o FILE)")
        sp.add_argument("--run-options", help="operational values as JSON (threads, retries, ...) over --params")
        sp.add_argument(
            "--threads",
            type=int,
            default=None,
            help="torch threads, or worker processes of the model-free stages (default: config threads)",
        )
        for flag in NAMES.get(stage_key or name, {}):
            sp.add_argument(f"--{flag}", default=None, help=f"the {flag} (needed with --config)")
        for flag, kw in ios:
            sp.add_argument(flag, **kw)
        sp.set_defaults(func=func)

    c = sub.add_parser("compose", help="compose and validate a config (Hydra overrides: key=value)")
    c.add_argument("--experiment", default="demo")
    c.add_argument("--params", default=None, help="an already composed config as JSON: validate and write it")
    c.add_argument("--run-options", default=None, help="operational values as JSON over --params (the workflow's)")
    c.add_argument("-o", "--output", help="write here instead of stdout")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(func=cmd_compose)
    stage(
        "data",
        cmd_data,
        "import the pool: train instructions with their responses, test split",
        ("--train", req),
        ("--test", {"default": None}),
        ("--dropped", {"default": None, "help": "list the input rows that could not be used here (JSONL)"}),
        ("--below-min", {"action": "store_true", "help": "write only the instructions below data.min_responses"}),
    )
    stage("model", cmd_model, "turn one configured model into a model folder", ("--output", req))
    stage(
        "sample",
        cmd_sample,
        "sample candidates from one source (resumes a killed run)",
        ("--model", req),
        ("--train", req),
        ("--output", req),
        ("--missing", {"default": None, "help": "requests that failed after retries (JSONL)"}),
    )
    stage(
        "verify",
        cmd_verify,
        "correctness filter; build the pool",
        ("--train", req),
        ("--candidates", {"nargs": "*", "default": []}),
        ("--extend", {"default": None, "help": "a pool to write first (the pool of every pair: --train below_min)"}),
        ("--output", req),
        ("--counts", req),
    )
    stage(
        "score",
        cmd_score,
        "score the pool (or one shard of it) with one target",
        ("--model", req),
        ("--pool", req),
        ("--output", req),
        ("--skipped", req),
        ("--shard", {"type": int, "default": 0}),
        ("--shards", {"type": int, "default": 1}),
    )
    stage("score-gather", cmd_score_gather, "join one target's score shards", ("--inputs", many),
          ("--skipped-inputs", many), ("--output", req), ("--skipped", req), stage_key="score")  # fmt: skip
    stage("reward", cmd_reward, "a reward model's score of every pool candidate (the reward arm)", ("--model", req),
          ("--pool", req), ("--output", req))  # fmt: skip
    stage("select", cmd_select, "one arm's training set for one target", ("--pool", req), ("--scores", {"default": None}),
          ("--output", req))  # fmt: skip
    stage("sft", cmd_sft, "fine-tune one target on one arm", ("--model", req), ("--selection", req), ("--output", req))
    stage(
        "evaluate-task",
        cmd_evaluate_task,
        "write the lm-eval task YAML for the test split",
        ("--test", req),
        ("--output", req),
        stage_key="evaluate",
    )
    task = {"default": None, "help": "the local benchmark's task YAML (grape evaluate-task)"}
    stage("evaluate", cmd_evaluate, "lm-eval one model", ("--model", req), ("--task", task), ("--output", req))
    stage(
        "report",
        cmd_report,
        "tables and figures",
        ("--evals", many),
        ("--trained", many),
        ("--selections", many),
        ("--scores", many),
        ("--verify-counts", req),
        ("--output-dir", req),
        ("--candidates", {"nargs": "*", "default": [], "help": "the sample stage's outputs (for the cost table)"}),
        ("--cluster-logs", {"default": None, "help": "the SLURM executor's log folder, for the failure list"}),
    )
    pf = sub.add_parser("prefetch", help="download the experiment's hub models and datasets (run with internet)")
    pf.add_argument("--experiment", default="demo")
    pf.add_argument("--params", default=None, help="the prefetch slice as JSON (what the workflow passes)")
    pf.add_argument("--output", default=None, help="write what was fetched (ids, commits, sha256) here")
    pf.add_argument("--dry-run", action="store_true", help="list what would be fetched; no network")
    pf.add_argument("overrides", nargs="*")
    pf.set_defaults(func=cmd_prefetch, stage="prefetch")
    rs = sub.add_parser("resources", help="what each job of an experiment asks a cluster for (Markdown table)")
    rs.add_argument("--experiment", default="demo")
    rs.add_argument("overrides", nargs="*")
    rs.set_defaults(func=cmd_resources, stage="resources")
    sp = sub.add_parser("plugins", help="every plugin of every kind (`grape plugins`) and what each does")
    sp.add_argument("kind", nargs="?", choices=list(gplugins.KINDS))
    sp.set_defaults(func=cmd_plugins, stage="plugins")
    pk = sub.add_parser("pick", help="score and select your own pool for one target, without Snakemake")
    pk.add_argument("--pool", required=True, help="a pool file, any JSONL/Parquet/Arrow file or directory, or a hub id")
    pk.add_argument("--target", required=True, help="a model folder, a config/model name, or a hub id")
    pk.add_argument(
        "--out",
        required=True,
        help="the selection (JSONL, one row per kept response: prompt, completion, "
        "messages, instruction_id, candidate_id, source, mean_logprob, task); provenance in <out>.meta.json",
    )
    pk.add_argument("--k", default=None, help="responses kept per instruction (default 1; `original` as in select.k)")
    pk.add_argument("--backend", default=None, choices=["packed", "reference", "vllm"], help="score.backend")
    pk.add_argument("--fields", nargs="*", help="column mapping for an imported pool, e.g. instruction=prompt "
                    "response=output source=model (or messages=conversation)")  # fmt: skip
    pk.add_argument("--workdir", default=None, help="keep the intermediate files here (a rerun resumes scoring)")
    pk.add_argument(
        "overrides", nargs="*", help="Hydra-style overrides of the default config, e.g. score.max_length=2048"
    )
    pk.set_defaults(func=cmd_pick, stage="pick")
    return ap


# the files a command writes whose `<file>.meta.json` a failed run must not leave behind (default: --output)
OUTPUTS = {
    "data": ("train", "test"),
    "score": ("output", "skipped"),
    "score-gather": ("output", "skipped"),
    "model": (),
    "sft": (),
    "pick": (),
    "report": (),
}


def main(argv=None) -> int:
    from grape import watchdog
    from grape.provenance import clear_meta

    args = build_parser().parse_args(argv)
    runtime.set_offline(hub=args.stage != "pick")  # pick downloads unless the environment says HF_HUB_OFFLINE=1
    watchdog.start()  # a job whose snakemake is killed stops too
    try:
        clear_meta([getattr(args, a, None) for a in OUTPUTS.get(args.stage, ("output",))])
        args.func(args)
        vllm_engine.exit_if_used(0)  # outputs are written; vLLM's own finalisers may abort (grape.vllm_engine)
    except (gconfig.ConfigError, ValueError, OSError, ImportError) as err:  # ConfigKeyError, DataError included
        print(f"grape {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
