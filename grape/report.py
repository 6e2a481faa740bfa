"""The `report` stage: the results table and the figures of one experiment.

Reads exactly the files the workflow hands it (`Inputs`): every evaluation, every fine-tuned model's
`train_log.json`, every selection, every target's scores and the verify counts. Writes, into the report folder:
- results.csv: target x arm (plus the untuned `base`): accuracy with a bootstrap interval, the
  number of test problems, training examples, training tokens and response tokens;
- verify_counts.csv: candidates generated / correct / dropped (by reason) / kept, per source;
- selection_sources.csv: how many selected responses came from each source, per target and arm;
- accuracy.svg, source_share.svg, score_dist.svg: the figures Snakemake's --report shows;
- summary.html: the same, self-contained, for a quick look without `snakemake --report`.
"""

from __future__ import annotations

import base64
import html
import os
from collections import Counter
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from grape.contracts import EVAL_SAMPLE, SCORED, SELECTION
from grape.io import DataError, atomic_path, check_row, read_json, read_jsonl


@dataclass
class Inputs:
    """The report's input files, in the order the workflow lists them (targets outer, arms inner)."""

    evals: Sequence[str]  # evaluate/<target>/<arm>.json for arm in [base, *arms]
    trained: Sequence[str]  # sft/<target>/<arm>/ for arm in arms
    selections: Sequence[str]  # selections/<target>/<arm>.jsonl for arm in arms
    scores: Sequence[str]  # scores/<target>.jsonl
    verify_counts: str  # pool/verify_counts.json
    candidates: Sequence[str] = ()  # candidates/<source>.jsonl (their meta.json holds the sampling cost)

    def keyed(self, params: Mapping) -> dict:
        """Map each (target, arm) to its files, checking that the names agree with the order."""
        targets, arms = list(params["targets"]), list(params["arms"])
        out = {"evals": {}, "trained": {}, "selections": {}, "scores": {}}
        for field, keys in (
            ("evals", list(product(targets, ["base", *arms]))),
            ("trained", list(product(targets, arms))),
            ("selections", list(product(targets, arms))),
            ("scores", [(t, None) for t in targets]),
        ):
            paths = list(getattr(self, field))
            if len(paths) != len(keys):
                raise ValueError(f"report: {len(paths)} {field} files for {len(keys)} expected ({keys})")
            for (target, arm), path in zip(keys, paths):
                p = Path(path)
                name = p.name.removesuffix(".jsonl").removesuffix(".json")
                expect = (target, arm) if arm else (target,)
                got = (p.parent.name, name) if arm else (name,)
                if got != expect:
                    raise ValueError(f"report: {path} is not the {field} file of {'/'.join(expect)}")
                out[field][(target, arm) if arm else target] = p
        return out


def bootstrap_ci(correct: list[float], n_boot: int, ci: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (fixed seed: the same outputs give the same interval)."""
    x = np.asarray(correct, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(lo), float(hi)


def _eval_samples(path: Path) -> tuple[dict, list[float]]:
    ev = read_json(path)
    samples = ev.get("samples") if isinstance(ev, dict) else None
    if not samples:
        raise DataError(path, None, "samples", "missing or empty: expected lm-eval's per-problem results")
    for sample in samples:
        check_row(path, None, sample, EVAL_SAMPLE)
    return ev, [float(s["correct"]) for s in samples]


def results_table(params: Mapping, files: Mapping) -> pd.DataFrame:
    rows = []
    rep = params["report"]
    for target in params["targets"]:
        for arm in ["base", *params["arms"]]:
            ev, correct = _eval_samples(files["evals"][(target, arm)])
            lo, hi = bootstrap_ci(correct, rep["bootstrap"], rep["ci"], params["seed"])
            row = {
                "target": target,
                "arm": arm,
                "accuracy": ev["accuracy"],
                "ci_low": lo,
                "ci_high": hi,
                "n_test": ev["n"],
                "train_examples": 0,
                "train_tokens": 0,
                "train_response_tokens": 0,
                "train_loss_first": None,
                "train_loss_last": None,
            }
            if arm != "base":
                log = read_json(files["trained"][(target, arm)] / "train_log.json")["counts"]
                row.update(
                    train_examples=log["examples"],
                    train_tokens=log["tokens"],
                    train_response_tokens=log["response_tokens"],
                    train_loss_first=log["first_loss"],
                    train_loss_last=log["last_loss"],
                )
            rows.append(row)
    return pd.DataFrame(rows)


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
                    "tokens_per_s": c.get("tokens_per_s"),
                    "resumed_from": c.get("resumed_from"),
                }
            )
    return pd.DataFrame(rows)


def scoring_table(params: Mapping, files: Mapping) -> pd.DataFrame:
    """Each target's scoring backend, dtype and why (the scores' meta.json); bf16 can flip near-ties, which
    `python bench/score.py --dtype-fidelity` measures."""
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
            }
        )
    return pd.DataFrame(rows)


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
    rows = []
    for target in params["targets"]:
        for arm in params["arms"]:
            counts = Counter(r["source"] for r in read_jsonl(files["selections"][(target, arm)], SELECTION))
            total = sum(counts.values())
            for src in ["original", *params["sources"]]:
                rows.append(
                    {
                        "target": target,
                        "arm": arm,
                        "source": src,
                        "selected": counts.get(src, 0),
                        "share": counts.get(src, 0) / total if total else 0.0,
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


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="svg", bbox_inches="tight")


def plot_accuracy(table: pd.DataFrame, path: Path):
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(table["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.5 * len(targets), 3.6), squeeze=False)
    for ax, target in zip(axes[0], targets):
        t = table[table["target"] == target]
        err = np.vstack([t["accuracy"] - t["ci_low"], t["ci_high"] - t["accuracy"]]).clip(min=0)
        colors = ["#7b2d8b" if a == "grape" else "#999999" if a == "base" else "#4c78a8" for a in t["arm"]]
        ax.bar(t["arm"], t["accuracy"], yerr=err, color=colors, capsize=3)
        ax.set_title(f"target: {target}")
        ax.set_ylabel("exact match (95% CI)")
        ax.set_ylim(0, max(0.05, float(t["ci_high"].max()) * 1.15))
        ax.tick_params(axis="x", rotation=45)
    _save(fig, path)
    plt.close(fig)


def plot_source_share(shares: pd.DataFrame, path: Path):
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(shares["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.5 * len(targets), 3.6), squeeze=False)
    for ax, target in zip(axes[0], targets):
        piv = shares[shares["target"] == target].pivot(index="arm", columns="source", values="share")
        piv = piv.reindex(list(dict.fromkeys(shares["arm"])))
        bottom = np.zeros(len(piv))
        for src in piv.columns:
            ax.bar(piv.index, piv[src].values, bottom=bottom, label=src)
            bottom += piv[src].values
        ax.set_title(f"selected responses by source, target: {target}")
        ax.set_ylabel("share")
        ax.tick_params(axis="x", rotation=45)
        ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def plot_scores(scores: pd.DataFrame, path: Path):
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(scores["target"])) or ["(none)"]
    fig, axes = plt.subplots(1, len(targets), figsize=(4.5 * len(targets), 3.6), squeeze=False)
    for ax, target in zip(axes[0], targets):
        t = scores[scores["target"] == target]
        sources = list(dict.fromkeys(t["source"]))
        if sources:
            ax.boxplot([t[t["source"] == s]["mean_logprob"].values for s in sources], showmeans=True)
            ax.set_xticks(range(1, len(sources) + 1), sources)
        ax.set_title(f"mean log-prob under {target}")
        ax.set_ylabel("mean log-prob per response token")
    _save(fig, path)
    plt.close(fig)


def _svg_inline(path: Path) -> str:
    return f'<img src="data:image/svg+xml;base64,{base64.b64encode(path.read_bytes()).decode()}"/>'


def run(params: Mapping, inputs: Inputs, output_dir: str, cluster_logs: str | None = None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    files, out = inputs.keyed(params), Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(params, files)
    shares = selection_sources(params, files)
    verify = pd.DataFrame(read_json(inputs.verify_counts))
    scores = score_frame(params, files)
    for name, df in (("results.csv", table), ("selection_sources.csv", shares), ("verify_counts.csv", verify)):
        with atomic_path(out / name) as tmp:
            df.to_csv(tmp, index=False, float_format="%.4f")
    plot_accuracy(table, out / "accuracy.svg")
    plot_source_share(shares, out / "source_share.svg")
    plot_scores(scores, out / "score_dist.svg")
    score_summary = (
        scores.groupby(["target", "source"])["mean_logprob"].describe()[["count", "mean", "50%"]].reset_index()
        if not scores.empty
        else pd.DataFrame()
    )
    body = [
        f"<h1>GRAPE experiment: {html.escape(str(params['name']))}</h1>",
        "<h2>Accuracy per arm</h2>",
        table.to_html(index=False, float_format="%.3f"),
        _svg_inline(out / "accuracy.svg"),
        "<h2>Correctness filter</h2>",
        verify.to_html(index=False),
        "<h2>Selected responses by source</h2>",
        _svg_inline(out / "source_share.svg"),
        "<h2>Scores by source</h2>",
        score_summary.to_html(index=False, float_format="%.3f"),
        _svg_inline(out / "score_dist.svg"),
    ]
    body += [
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
    return {"rows": len(table), "cluster_failures": len(failures)}
