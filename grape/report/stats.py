"""The numbers a paper reader checks, computed from per-problem results: intervals, paired differences between
arms, the plain-language outcome, the cost of every stage.

Arms are compared on the same problems, so the interval of a difference is a *paired* bootstrap: problems are
resampled once per replicate and both arms' results on them are kept together (`paired_ci`). That interval is much
narrower than what two independent per-arm intervals suggest, because the problems' difficulty cancels out. The
outcome paragraph is written from these intervals only: a difference is called a win or a loss when its interval
excludes zero, otherwise "not resolvable at this size".
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from grape.io import read_json


def bootstrap_ci(correct: Sequence[float], n_boot: int, ci: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (fixed seed: the same outputs give the same interval)."""
    x = np.asarray(correct, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(lo), float(hi)


def paired_ci(a: Mapping[str, float], b: Mapping[str, float], n_boot: int, ci: float, seed: int) -> dict:
    """Mean of a - b over the problems both were evaluated on, with its paired percentile bootstrap interval."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return {"n": 0, "delta": float("nan"), "lo": float("nan"), "hi": float("nan")}
    d = np.array([a[k] - b[k] for k in shared], dtype=float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return {"n": len(shared), "delta": float(d.mean()), "lo": float(lo), "hi": float(hi)}


def paired_table(per_problem: Mapping, params: Mapping) -> pd.DataFrame:
    """Every arm minus `original` and minus `grape`, per target and benchmark (where those arms exist).
    `per_problem[(target, arm, benchmark)]` maps problem id -> 1.0/0.0."""
    rep, rows = params["report"], []
    arms = ["base", *params["arms"]]
    for target, bench in dict.fromkeys((t, b) for t, _, b in per_problem):
        for ref in ("original", "grape"):
            if (target, ref, bench) not in per_problem:
                continue
            for arm in arms:
                if arm == ref or (target, arm, bench) not in per_problem:
                    continue
                r = paired_ci(per_problem[(target, arm, bench)], per_problem[(target, ref, bench)],
                              rep["bootstrap"], rep["ci"], params["seed"])  # fmt: skip
                rows.append({"target": target, "benchmark": bench, "arm": arm, "minus": ref, **r})
    cols = ["target", "benchmark", "arm", "minus", "n", "delta", "lo", "hi"]
    return pd.DataFrame(rows, columns=cols)


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def outcome(paired: pd.DataFrame, ci: float) -> str:
    """One paragraph, from the paired intervals of `grape` minus `original` (and minus the other arms)."""
    if paired.empty:
        return "No paired comparison is possible: the experiment has neither a grape nor an original arm."
    parts = []
    g = paired[(paired["arm"] == "grape") & (paired["minus"] == "original")]
    for r in g.itertuples():
        where = f"on {r.benchmark} (target {r.target}, {r.n} problems)"
        if r.lo > 0:
            parts.append(f"grape beat original by {_pts(r.delta)} points [{_pts(r.lo)}, {_pts(r.hi)}] {where}.")
        elif r.hi < 0:
            parts.append(f"grape fell behind original by {_pts(r.delta)} points [{_pts(r.lo)}, {_pts(r.hi)}] {where}.")
        elif r.lo == r.hi == 0:
            parts.append(f"grape and original gave the same result on every problem {where}.")
        else:
            parts.append(
                f"grape minus original is {_pts(r.delta)} points [{_pts(r.lo)}, {_pts(r.hi)}] {where}: "
                "no difference resolvable at this size."
            )
    vs = paired[paired["minus"] == "grape"]
    beaten = sorted({f"{r.arm} ({r.benchmark})" for r in vs.itertuples() if r.hi < 0})
    ahead = sorted({f"{r.arm} ({r.benchmark})" for r in vs.itertuples() if r.lo > 0})
    unresolved = len(vs) - len(beaten) - len(ahead)
    if len(vs):
        parts.append(
            f"Against the other arms, grape is resolvably ahead of {', '.join(beaten) or 'none'}, resolvably behind "
            f"{', '.join(ahead) or 'none'}, and not resolvably different in the other {unresolved} comparison(s)."
        )
    width = (paired["hi"] - paired["lo"]).median() / 2
    parts.append(
        f"Intervals are paired {int(ci * 100)}% bootstrap intervals over the same problems; their median "
        f"half-width is {100 * width:.1f} points."
    )
    return " ".join(parts)


def stage_costs(meta_files: Mapping[str, Sequence[Path]]) -> pd.DataFrame:
    """Per stage: jobs, wall time, CPU- and GPU-hours, and the tokens it processed, from every output's meta.json
    (`counts.seconds` is each job's wall time; CPU-hours count the job's threads, GPU-hours its GPUs)."""
    rows = []
    for stage, paths in meta_files.items():
        seconds = cpu_h = gpu_h = 0.0
        tokens, jobs = 0, 0
        for path in paths:
            if not path.exists():
                continue
            meta = read_json(path)
            c, p = meta.get("counts", {}), meta.get("params", {})
            # score: its shards' time (a gather takes ~0 s); sft: its training time
            s = float(c.get("shard_seconds") or c.get("seconds") or c.get("train_seconds") or 0.0)
            jobs += 1
            seconds += s
            gpus = p.get("gpus") or 0
            cpu_h += s * float(p.get("threads") or 1) / 3600
            gpu_h += s * float(gpus) / 3600
            cost = c.get("cost", {})
            tokens += int(cost.get("prompt_tokens", 0) or 0) + int(cost.get("completion_tokens", 0) or 0)
            tokens += int(c.get("tokens", 0) or 0) + int(c.get("scored_tokens", 0) or 0)
        rows.append({"stage": stage, "jobs": jobs, "wall_seconds": round(seconds, 1), "cpu_hours": round(cpu_h, 4),
                     "gpu_hours": round(gpu_h, 4), "tokens": tokens})  # fmt: skip
    return pd.DataFrame(rows)


def paper_table(params: Mapping, table: pd.DataFrame) -> pd.DataFrame:
    """The paper's numbers (`report.paper`, labelled as the paper's) beside ours: our mean score x 100 over the paper's
    columns (`report.paper.columns`) that ran for that target and arm, labelled "k of n columns" so a mean over fewer
    columns is never read as the paper's average; where the paper gives per-column numbers (`per_column`), also the
    paper's mean over the same k columns, the one like-for-like comparison."""
    paper = params["report"].get("paper")
    if not paper:
        return pd.DataFrame()
    ran = table[table["n"] > 0]
    cols = list(paper.get("columns") or sorted(set(table["benchmark"])))
    per = paper.get("per_column") or {}
    rows = []
    for target, arms in paper["values"].items():
        for arm, value in arms.items():
            mine = ran[(ran["target"] == target) & (ran["arm"] == arm) & ran["benchmark"].isin(cols)]
            done = [c for c in cols if c in set(mine["benchmark"])]
            theirs = per.get(target, {}).get(arm, {})
            same = [theirs[c] for c in done if c in theirs]
            rows.append({"target": target, "arm": arm, f"paper ({paper['source']})": value,
                         "columns": f"{len(done)} of {len(cols)}" + (f" ({', '.join(done)})" if 0 < len(done) < len(cols) else ""),
                         "ours (mean x 100)": round(100 * float(mine["accuracy"].mean()), 1) if done else None,
                         "paper, same columns": round(sum(same) / len(same), 1) if done and len(same) == len(done) else None})  # fmt: skip
    return pd.DataFrame(rows)


def arm_sizes(params: Mapping, selections: Mapping) -> pd.DataFrame:
    """Per target and arm, the examples its selection holds and the instructions the arm chose from (its meta.json:
    the pool's, plus those below data.min_responses for sft_full / all_available), what a baseline could not fill
    (the `*_shortfall` counts: strongest, 3x) and, for a paper config, the paper's "Num. Instances"
    (`report.paper.instances`)."""
    from grape.provenance import meta_path

    paper = (params["report"].get("paper") or {}).get("instances") or {}
    rows = []
    for (target, arm), path in selections.items():
        c = read_json(meta_path(path)).get("counts", {}) if meta_path(path).exists() else {}
        short = sum(v for k, v in c.items() if k.endswith("_shortfall") and isinstance(v, int))
        row = {"target": target, "arm": arm, "examples": c.get("examples"), "instructions read": c.get("instructions"),
               "shortfall": short}  # fmt: skip
        if paper:  # a paper config's column only: elsewhere it would say None in every row
            row["paper's Num. Instances"] = paper.get(arm)
        rows.append(row)
    return pd.DataFrame(rows)
