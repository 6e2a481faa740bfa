"""The `report` stage: the tables, figures and summary page of one experiment.

Reads exactly the files the workflow hands it (`Inputs`): every evaluation, every fine-tuned model's
`train_log.json`, every selection, every target's scores, the verify counts and the sampled candidates (their
meta.json files give each stage's cost). Writes, into the report folder:
- results.csv: target x arm (plus the untuned `base`) x benchmark: score with a 95% bootstrap interval, problems,
  training examples and tokens; benchmarks that were not run are rows that say why; a judged AlpacaEval 2 job
  gives two rows, `alpaca_eval` (AE2-WR) and `alpaca_eval_lc` (AE2-LC), the two columns of the paper's Table 2;
- paired.csv: each arm minus `original` and minus `grape` on the same problems, with paired bootstrap intervals
  (`grape.report.stats`), and the plain-language outcome generated from them (outcome.txt);
- verify_counts.csv, selection_sources.csv, selected_vs_not.csv, costs.csv, loss.csv;
- accuracy.svg, paired.svg, source_share.svg, score_dist.svg, loss.svg (`grape.report.figures`);
- summary.html: all of it, self-contained, for a quick look without `snakemake --report`.
"""

from __future__ import annotations

import base64
import html
import os
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from grape import plugins
from grape.contracts import SCORED, SELECTION
from grape.io import atomic_path, read_json, read_jsonl
from grape.provenance import meta_path
from grape.report import figures
from grape.report.inputs import Inputs, eval_benchmarks
from grape.report.stats import arm_sizes, bootstrap_ci, outcome, paired_table, paper_table, stage_costs

UNSANDBOXED = "unsandboxed (evaluate.sandbox: none): its model-written code ran with the node's files and network"


def results_table(params: Mapping, files: Mapping) -> tuple[pd.DataFrame, dict]:
    """The results table, and per (target, arm, benchmark) the problem id -> correct map the paired intervals use."""
    rows, per_problem = [], {}
    rep = params["report"]
    for target in params["targets"]:
        for arm in ["base", *params["arms"]]:
            train = {"train_examples": 0, "train_tokens": 0, "train_loss_first": None, "train_loss_last": None}
            if arm != "base":
                log = read_json(files["trained"][(target, arm)] / "train_log.json")["counts"]
                train.update(train_examples=log["examples"], train_tokens=log["tokens"],
                             train_loss_first=log["first_loss"], train_loss_last=log["last_loss"])  # fmt: skip
            for bench, res in eval_benchmarks(files["evals"][(target, arm)]).items():
                row = {"target": target, "arm": arm, "benchmark": bench}
                if "not_run" in res:
                    rows.append({**row, "metric": None, "accuracy": None, "ci_low": None, "ci_high": None, "n": 0,
                                 "note": res["not_run"], **train})  # fmt: skip
                    continue
                correct = [float(s["correct"]) for s in res["samples"]]
                lo, hi = bootstrap_ci(correct, rep["bootstrap"], rep["ci"], params["seed"])
                per_problem[(target, arm, bench)] = {s["id"]: float(s["correct"]) for s in res["samples"]}
                limit = res.get("limit")
                note = f"first {limit} problems per task" if limit else ""
                runner = plugins.benchmark_runner(res) if res.get("task") else None
                if hasattr(runner, "note"):  # the runner's word on its row (AlpacaEval: the judge, LC)
                    note = "; ".join(x for x in [note, runner.note(res)] if x)
                if res.get("sandbox") == "none":
                    note = "; ".join(x for x in [UNSANDBOXED, note] if x)
                rows.append({**row, "metric": res["metric"], "accuracy": res["accuracy"], "ci_low": lo, "ci_high": hi,
                             "n": res["n"], "note": note, **train})  # fmt: skip
                for extra in runner.extra_rows(res, bench) if hasattr(runner, "extra_rows") else []:
                    rows.append({**row, **extra, **train})  # AlpacaEval 2's LC row
    return pd.DataFrame(rows), per_problem


def loss_table(params: Mapping, files: Mapping) -> pd.DataFrame:
    """Per target and arm, the SFT loss at every logged step (train_log.json's log_history)."""
    rows = []
    for target in params["targets"]:
        for arm in params["arms"]:
            log = read_json(files["trained"][(target, arm)] / "train_log.json")
            for h in log.get("log_history", []):
                if "loss" in h:
                    rows.append({"target": target, "arm": arm, "step": h.get("step"), "loss": h["loss"]})
    return pd.DataFrame(rows, columns=["target", "arm", "step", "loss"])


def selected_vs_not(params: Mapping, files: Mapping) -> pd.DataFrame:
    """Per target: the mean log-prob of the candidates grape selected against those it could have and did not (and
    their counts); the target's own samples, which it may not pick under `select.exclude_self`, are counted apart."""
    rows = []
    for target in params["targets"] if "grape" in params["arms"] else []:
        chosen = {r["candidate_id"] for r in read_jsonl(files["selections"][(target, "grape")], SELECTION)}
        scores = read_jsonl(files["scores"][target], SCORED)
        barred = [r for r in scores if params["exclude_self"] and r["source"] == target]
        eligible = [r for r in scores if not (params["exclude_self"] and r["source"] == target)]
        sel = [r["mean_logprob"] for r in eligible if r["candidate_id"] in chosen]
        rest = [r["mean_logprob"] for r in eligible if r["candidate_id"] not in chosen]
        rows.append({"target": target, "selected": len(sel), "selected_mean_logprob": np.mean(sel) if sel else None,
                     "not_selected": len(rest), "not_selected_mean_logprob": np.mean(rest) if rest else None,
                     "own_samples_not_eligible": len(barred)})  # fmt: skip
    return pd.DataFrame(rows)


def rounds_table(params: Mapping, files: Mapping) -> pd.DataFrame:
    """Multi-round GRAPE: per target and round r >= 2, the instructions whose pick differs from round r-1's."""
    from grape.arms import scorer_of

    rows = []
    for target in params["targets"]:
        for arm in (a for a in params["arms"] if a.startswith("grape.r")):
            picks = [{}, {}]
            for i, name in enumerate((scorer_of(arm), arm)):
                for r in read_jsonl(files["selections"][(target, name)], SELECTION):
                    picks[i].setdefault(r["instruction_id"], set()).add(r["candidate_id"])
            both = picks[0].keys() | picks[1].keys()
            changed = sum(picks[0].get(i) != picks[1].get(i) for i in both)
            rows.append({"target": target, "round": arm, "scored_by": scorer_of(arm), "instructions": len(both),
                         "picks_changed": changed})  # fmt: skip
    return pd.DataFrame(rows)


def task_breakdown(params: Mapping, files: Mapping) -> pd.DataFrame:
    """Selected responses per task type (pools that have types, e.g. UltraInteract's Coding/Math/Logic)."""
    rows = []
    for target in params["targets"]:
        for arm in params["arms"]:
            counts = Counter(r.get("task") for r in read_jsonl(files["selections"][(target, arm)], SELECTION))
            rows += [{"target": target, "arm": arm, "task": t, "selected": n} for t, n in sorted(counts.items()) if t]
    return pd.DataFrame(rows, columns=["target", "arm", "task", "selected"])


def costs(inputs: Inputs) -> pd.DataFrame:
    """Cost per stage from every output's meta.json (`grape.report.stats.stage_costs`)."""
    stages = {
        "sample": [meta_path(p) for p in inputs.candidates],
        "verify": [meta_path(Path(inputs.verify_counts).with_name("pool.jsonl"))],
        "score": [meta_path(p) for p in inputs.scores],
        "select": [meta_path(p) for p in inputs.selections],
        "sft": [Path(p) / "grape_meta.json" for p in inputs.trained],
        "evaluate": [meta_path(p) for p in inputs.evals],
    }
    return stage_costs(stages)


def training_table(params: Mapping, files: Mapping) -> pd.DataFrame:
    """How each arm was trained (train_log.json's recipe): processes, accumulation, dtype and why, speed."""
    rows = []
    for target in params["targets"]:
        for arm in params["arms"]:
            log = read_json(files["trained"][(target, arm)] / "train_log.json")
            c, r = log["counts"], log.get("recipe", {})
            rows.append(
                {
                    "target": target,
                    "arm": arm,
                    "steps": c.get("steps"),
                    "global_batch": r.get("global_batch"),
                    "processes": r.get("processes"),
                    "grad_accum": r.get("grad_accum"),
                    "padding_free": r.get("padding_free"),
                    "dtype": r.get("dtype"),
                    "dtype_reason": r.get("dtype_reason"),
                    "gradient_checkpointing": r.get("gradient_checkpointing"),
                    "tokens_per_s": c.get("tokens_per_s"),
                    "mfu": log.get("throughput", {}).get("steady_mfu"),
                    "resumed_from": c.get("resumed_from"),
                }
            )
    return pd.DataFrame(rows)


def scoring_table(params: Mapping, files: Mapping) -> pd.DataFrame:
    """Each target's scoring backend, dtype and why (the scores' meta.json); where the dtype is not fp32, what it
    changed on a sample rescored in fp32 (`grape.score.fidelity`): rank agreement, picks that differ, near-ties."""
    rows = []
    for target in params["targets"]:
        meta_path = Path(f"{files['scores'][target]}.meta.json")
        c = read_json(meta_path).get("counts", {}) if meta_path.exists() else {}
        rows.append(
            {
                "target": target,
                "backend": c.get("backend"),
                "dtype": c.get("dtype"),
                "dtype_reason": c.get("dtype_reason"),
                "scored": c.get("scored"),
                "skipped": c.get("skipped"),
                "vs fp32 (sample)": _fidelity_cell(c.get("dtype_fidelity")),
            }
        )
    return pd.DataFrame(rows)


def _fidelity_cell(f: Mapping | None) -> str:
    if not f:
        return "- (fp32: the reference itself)"
    rho = "n/a" if f.get("mean_spearman") is None else f"{f['mean_spearman']:.4f}"
    return (
        f"{f['instructions']} instructions rescored in {f['reference_dtype']}: Spearman {rho}, "
        f"picks differ {f['picks_differ']}/{f['instructions']} ({f['near_ties']} near-ties < {f['tie_nats']:g} nats), "
        f"max |d mean| {f['max_abs_diff']:.1e}"
    )


def sampling_cost(candidates: Sequence[str]) -> pd.DataFrame:
    """Per source: requests, prompt and completion tokens, failures, wall time, resumed chunks (the sample stage's
    meta.json)."""
    rows = []
    for path in candidates:
        meta_path = Path(f"{path}.meta.json")
        meta = read_json(meta_path) if meta_path.exists() else {}
        c = meta.get("counts", {})
        cost = c.get("cost", {})
        rows.append(
            {
                "source": meta.get("params", {}).get("source", Path(path).stem),
                "backend": meta.get("params", {}).get("sample", {}).get("backend"),
                "candidates": c.get("candidates"),
                "requests": cost.get("requests"),
                "prompt_tokens": cost.get("prompt_tokens"),
                "completion_tokens": cost.get("completion_tokens"),
                "failures": cost.get("failures"),
                "wall_seconds": cost.get("wall_seconds"),
                "chunks_resumed": c.get("chunks_resumed"),
            }
        )
    return pd.DataFrame(rows)


def selection_sources(params: Mapping, files: Mapping) -> pd.DataFrame:
    """Per target and arm, how many examples came from each source: the sources the selections hold (the sampled
    models, `original`, or a Tulu-3 mix's datasets), plus the configured models none of them picked (as 0)."""
    rows, counts = [], {}
    for target in params["targets"]:
        for arm in params["arms"]:
            counts[target, arm] = Counter(
                r["source"] for r in read_jsonl(files["selections"][(target, arm)], SELECTION)
            )
    seen = sorted({src for c in counts.values() for src in c}, key=lambda s: (s != "original", s))
    sources = [*seen, *(s for s in params["sources"] if s not in seen)]
    for target in params["targets"]:
        for arm in params["arms"]:
            total = sum(counts[target, arm].values())
            for src in sources:
                count = counts[target, arm]
                rows.append(
                    {
                        "target": target,
                        "arm": arm,
                        "source": src,
                        "selected": count.get(src, 0),
                        "share": count.get(src, 0) / total if total else 0.0,
                    }
                )
    return pd.DataFrame(rows)


def score_frame(params: Mapping, files: Mapping) -> pd.DataFrame:
    frames = []
    for target in params["targets"]:
        df = pd.DataFrame(read_jsonl(files["scores"][target], SCORED))
        if not df.empty:
            frames.append(df.assign(target=target)[["target", "source", "mean_logprob", "n_tokens"]])
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["target", "source", "mean_logprob", "n_tokens"])
    )


def cluster_failures(log_dir: str | None, out: Path) -> pd.DataFrame:
    """Cluster job attempts that failed: the SLURM executor deletes the logs of successful jobs and keeps the others
    (`.snakemake/slurm_logs/rule_<rule>/[<wildcards>/]<jobid>.log`), so each log left is a failed (then retried, or
    given up) attempt. One row per log, with a path relative to the report for the link."""
    cols = ["rule", "wildcards", "slurm_job", "log"]
    if not log_dir or not Path(log_dir).is_dir():
        return pd.DataFrame(columns=cols)
    rows = []
    for log in sorted(Path(log_dir).rglob("*.log")):
        parts = log.relative_to(log_dir).parts
        rule = parts[0].removeprefix("rule_")
        rows.append([rule, "/".join(parts[1:-1]), log.stem, os.path.relpath(log.resolve(), out.resolve())])
    return pd.DataFrame(rows, columns=cols)


def _svg_inline(path: Path) -> str:  # scaled to the page: a wide figure (a row of panels) never overflows it
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img style="max-width:100%;height:auto" src="data:image/svg+xml;base64,{data}"/>'


def _csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")


def run(params: Mapping, inputs: Inputs, output_dir: str, cluster_logs: str | None = None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    files, out = inputs.keyed(params), Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table, per_problem = results_table(params, files)
    paired = paired_table(per_problem, params)
    said = outcome(paired, params["report"]["ci"])
    shares = selection_sources(params, files)
    verify = pd.DataFrame(read_json(inputs.verify_counts))
    scores = score_frame(params, files)
    loss = loss_table(params, files)
    fit = selected_vs_not(params, files)
    cost = costs(inputs)
    tasks = task_breakdown(params, files)
    for name, df in (("results.csv", table), ("paired.csv", paired), ("selection_sources.csv", shares),
                     ("verify_counts.csv", verify), ("loss.csv", loss), ("selected_vs_not.csv", fit),
                     ("costs.csv", cost)):  # fmt: skip
        _csv(df, out / name)
    with atomic_path(out / "outcome.txt") as tmp:
        tmp.write_text(said + "\n")
    figures.accuracy(table, out / "accuracy.svg")
    figures.paired(paired, out / "paired.svg")
    figures.source_share(shares, out / "source_share.svg")
    figures.scores(scores, out / "score_dist.svg")
    figures.loss_curves(loss, out / "loss.svg")
    score_summary = (
        scores.groupby(["target", "source"])["mean_logprob"].describe()[["count", "mean", "50%"]].reset_index()
        if not scores.empty
        else pd.DataFrame()
    )
    not_run = table[table["n"] == 0][["benchmark", "note"]].drop_duplicates()
    body = [
        f"<h1>GRAPE experiment: {html.escape(str(params['name']))}</h1>",
        "<h2>Outcome</h2>",
        f"<p id='outcome'>{html.escape(said)}</p>",
        "<h2>Results per arm and benchmark</h2>",
        table.to_html(index=False, float_format="%.3f", na_rep=""),
        _svg_inline(out / "accuracy.svg"),
    ]
    if len(not_run):
        body += ["<p>Not run: " + "; ".join(f"{html.escape(r.benchmark)}: {html.escape(r.note)}"
                                            for r in not_run.itertuples()) + "</p>"]  # fmt: skip
    bare = sorted(set(table.loc[table["note"].fillna("").str.startswith(UNSANDBOXED), "benchmark"]))
    if bare:
        body += [
            f"<p id='unsandboxed'><b>Unsandboxed</b>: {html.escape(', '.join(bare))}: {html.escape(UNSANDBOXED)}.</p>"
        ]
    paper = paper_table(params, table)
    if len(paper):
        body += [f"<h2>The paper's numbers beside ours</h2><p>{html.escape(params['report']['paper']['metric'])}; "
                 "the paper's column is the paper's, not a run of this suite.</p>", paper.to_html(index=False, na_rep="n/a")]  # fmt: skip
    body += [
        "<h2>Training examples per arm</h2><p>shortfall: responses a baseline's definition asked for that the pool "
        "did not have (strongest, 3x).</p>",
        arm_sizes(params, files["selections"]).to_html(index=False, na_rep=""),
        "<h2>Paired differences (same problems)</h2>",
        paired.to_html(index=False, float_format="%.3f"),
        _svg_inline(out / "paired.svg"),
        "<h2>Correctness filter</h2>",
        verify.to_html(index=False),
        "<h2>Selected responses by source</h2>",
        _svg_inline(out / "source_share.svg"),
        "<h2>Selected vs not selected</h2>",
        fit.to_html(index=False, float_format="%.3f"),
    ]
    if len(tasks):
        body += ["<h2>Selected responses by task type</h2>", tasks.to_html(index=False)]
    rounds = rounds_table(params, files)
    if len(rounds):
        body += ["<h2>GRAPE rounds</h2><p>Each round rescored the pool with the previous round's GRAPE model and "
                 "fine-tuned the base target on the new pick.</p>", rounds.to_html(index=False)]  # fmt: skip
    body += [
        "<h2>Scores by source</h2>",
        score_summary.to_html(index=False, float_format="%.3f"),
        _svg_inline(out / "score_dist.svg"),
        "<h2>SFT loss</h2>",
        _svg_inline(out / "loss.svg"),
        "<h2>Cost per stage</h2>",
        cost.to_html(index=False),
        "<h2>Sampling cost</h2>",
        sampling_cost(inputs.candidates).to_html(index=False) if inputs.candidates else "<p>no sampling</p>",
        "<h2>Scoring</h2>",
        scoring_table(params, files).to_html(index=False),
        "<h2>Training</h2>",
        training_table(params, files).to_html(index=False),
    ]
    failures = cluster_failures(cluster_logs, out)
    if cluster_logs:
        links = failures.assign(log=[f"<a href='{html.escape(p)}'>{html.escape(p)}</a>" for p in failures["log"]])
        body += [
            "<h2>Cluster job failures</h2>",
            "<p>Attempts that failed on the cluster (retried per --retries); each links its Slurm log.</p>",
            links.to_html(index=False, escape=False) if len(failures) else "<p>none</p>",
        ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>GRAPE report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )
    with atomic_path(out / "summary.html") as tmp:
        tmp.write_text(page)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(said)
    return {"rows": len(table), "paired": len(paired), "cluster_failures": len(failures)}
