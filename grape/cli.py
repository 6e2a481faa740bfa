"""`grape <stage>`: run one stage outside Snakemake (the rules call exactly these commands).

Every stage takes the composed config (`--config results/<exp>/config.yaml`, or write one with
`grape compose`), reads only its own slice of it (`grape.config.stage_params`), writes its outputs
atomically, and writes provenance beside them (`<output>.meta.json`, or `grape_meta.json` inside a
folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from grape import config as gconfig
from grape import runtime


def _load(args, stage: str, **wc) -> dict:
    cfg = gconfig.load(args.config)
    params = gconfig.stage_params(cfg, stage, **wc)
    if getattr(args, "threads", None):
        params["threads"] = args.threads
    return params


def _finish(stage: str, params: dict, outputs: list[str], inputs: dict, counts: dict, t0: float) -> None:
    from grape.provenance import write_meta

    counts = {**counts, "seconds": round(time.time() - t0, 2)}
    for out in outputs:
        write_meta(out, stage, params, inputs, counts)
    print(json.dumps({"stage": stage, **counts}, default=str))


def cmd_compose(args):
    cfg = gconfig.compose(args.experiment, args.overrides)
    if args.output:
        gconfig.write_if_changed(args.output, cfg)
    else:
        sys.stdout.write(gconfig.dump(cfg))


def cmd_data(args):
    from grape import data

    t0, p = time.time(), _load(args, "data")
    counts = data.run(p, args.train, args.test)
    _finish("data", p, [args.train, args.test], {}, counts, t0)


def cmd_model(args):
    from grape import models

    t0 = time.time()
    p = _load(args, "model", model=args.name)
    m = models.materialise(args.name, p["model"], args.output)
    print(json.dumps({"stage": "model", "name": args.name, "kind": m["kind"], "seconds": round(time.time() - t0, 1)}))


def cmd_sample(args):
    from grape import sample

    t0, p = time.time(), _load(args, "sample", source=args.source)
    counts = sample.run(p, args.model, args.train, args.output)
    _finish("sample", p, [args.output], {"model": args.model, "train": args.train}, counts, t0)


def cmd_verify(args):
    from grape import verify

    t0, p = time.time(), _load(args, "verify")
    counts = verify.run(p, args.train, args.candidates, args.output, args.counts)
    inputs = {"train": args.train, **{f"candidates{i}": c for i, c in enumerate(args.candidates)}}
    _finish("verify", p, [args.output], inputs, counts, t0)


def cmd_score(args):
    from grape import score

    t0, p = time.time(), _load(args, "score", target=args.target)
    counts = score.run(p, args.model, args.pool, args.output, args.skipped, args.shard, args.shards)
    _finish("score", p, [args.output, args.skipped], {"model": args.model, "pool": args.pool}, counts, t0)


def cmd_score_gather(args):
    from grape import score

    t0, p = time.time(), _load(args, "score", target=args.target)
    counts = score.gather(args.inputs, args.skipped_inputs, args.output, args.skipped)
    inputs = {f"shard{i}": path for i, path in enumerate(args.inputs)}
    _finish("score", p, [args.output, args.skipped], inputs, counts, t0)


def cmd_select(args):
    from grape import select

    t0, p = time.time(), _load(args, "select", target=args.target, arm=args.arm)
    counts = select.run(p, args.pool, args.scores, args.output)
    inputs = {"pool": args.pool, **({"scores": args.scores} if args.scores else {})}
    _finish("select", p, [args.output], inputs, counts, t0)


def cmd_sft(args):
    from grape import sft

    t0, p = time.time(), _load(args, "sft", target=args.target, arm=args.arm)
    counts = sft.run(p, args.model, args.selection, args.output)
    print(json.dumps({"stage": "sft", **counts, "seconds": round(time.time() - t0, 1)}, default=str))


def cmd_eval_task(args):
    from grape import evaluate

    cfg = gconfig.load(args.config)
    p = gconfig.stage_params(cfg, "evaluate")
    evaluate.write_task(p, cfg["name"], args.test, args.output)
    _finish("eval-task", p, [args.output], {"test": args.test}, {}, time.time())


def cmd_evaluate(args):
    from grape import evaluate

    t0, p = time.time(), _load(args, "evaluate")
    counts = evaluate.run(p, args.model, args.task, args.output)
    _finish("evaluate", p, [args.output], {"model": args.model, "task": args.task}, counts, t0)


def cmd_report(args):
    from grape import report

    t0, p = time.time(), _load(args, "report")
    counts = report.run(p, args.results_dir, args.output_dir)
    print(json.dumps({"stage": "report", **counts, "seconds": round(time.time() - t0, 1)}, default=str))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="grape", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)

    def stage(name, func, help_, *ios):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--config", required=True, help="composed config YAML (grape compose -o FILE)")
        sp.add_argument("--threads", type=int, default=None, help="torch threads (default: config threads)")
        for flag, kw in ios:
            sp.add_argument(flag, **kw)
        sp.set_defaults(func=func)

    c = sub.add_parser("compose", help="compose and validate a config (Hydra overrides: key=value)")
    c.add_argument("--experiment", default="demo")
    c.add_argument("-o", "--output", help="write here instead of stdout")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(func=cmd_compose)
    req = {"required": True}
    stage("data", cmd_data, "make the train/test splits", ("--train", req), ("--test", req))
    stage("model", cmd_model, "turn one configured model into an HF folder", ("--name", req), ("--output", req))
    stage("sample", cmd_sample, "sample candidates from one source", ("--source", req), ("--model", req),
          ("--train", req), ("--output", req))
    stage("verify", cmd_verify, "correctness filter; build the pool", ("--train", req),
          ("--candidates", {"required": True, "nargs": "+"}), ("--output", req), ("--counts", req))
    stage("score", cmd_score, "score the pool (or one shard of it) with one target", ("--target", req),
          ("--model", req), ("--pool", req), ("--output", req), ("--skipped", req),
          ("--shard", {"type": int, "default": 0}), ("--shards", {"type": int, "default": 1}))
    stage("score-gather", cmd_score_gather, "join one target's score shards", ("--target", req),
          ("--inputs", {"required": True, "nargs": "+"}), ("--skipped-inputs", {"required": True, "nargs": "+"}),
          ("--output", req), ("--skipped", req))
    stage("select", cmd_select, "one arm's training set for one target", ("--target", req), ("--arm", req),
          ("--pool", req), ("--scores", {"default": None}), ("--output", req))
    stage("sft", cmd_sft, "fine-tune one target on one arm", ("--target", req), ("--arm", req), ("--model", req),
          ("--selection", req), ("--output", req))
    stage("eval-task", cmd_eval_task, "write the lm-eval task YAML", ("--test", req), ("--output", req))
    stage("evaluate", cmd_evaluate, "lm-eval one model", ("--model", req), ("--task", req), ("--output", req))
    stage("report", cmd_report, "tables and figures", ("--results-dir", req), ("--output-dir", req))
    return ap


def main(argv=None) -> int:
    runtime.set_offline()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (gconfig.ConfigError, ValueError, FileNotFoundError) as err:
        print(f"grape {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
