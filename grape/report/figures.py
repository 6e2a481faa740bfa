"""The report's figures (SVG, for Snakemake's --report and summary.html): accuracy per arm and benchmark, paired
differences, selected-source shares, score distributions, SFT loss curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from grape.io import atomic_path


def save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="svg", bbox_inches="tight")
    plt.close(fig)


def _grid(n: int, width: float = 4.5):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, n), figsize=(width * max(1, n), 3.6), squeeze=False)
    return fig, axes[0]


def accuracy(table: pd.DataFrame, path: Path) -> None:
    """One panel per (target, benchmark): each arm's score with its 95% bootstrap interval."""
    ran = table[table["n"] > 0]
    panels = list(dict.fromkeys(zip(ran["target"], ran["benchmark"])))
    fig, axes = _grid(len(panels))
    for ax, (target, bench) in zip(axes, panels):
        t = ran[(ran["target"] == target) & (ran["benchmark"] == bench)]
        err = np.vstack([t["accuracy"] - t["ci_low"], t["ci_high"] - t["accuracy"]]).clip(min=0)
        colors = ["#7b2d8b" if a == "grape" else "#999999" if a == "base" else "#4c78a8" for a in t["arm"]]
        ax.bar(t["arm"], t["accuracy"], yerr=err, color=colors, capsize=3)
        ax.set_title(f"{bench}, target: {target}")
        ax.set_ylabel("score (95% CI)")
        ax.set_ylim(0, max(0.05, float(t["ci_high"].max()) * 1.15))
        ax.tick_params(axis="x", rotation=45)
    save(fig, path)


def paired(table: pd.DataFrame, path: Path) -> None:
    """Each arm minus original and minus grape, with the paired interval; zero marked."""
    panels = list(dict.fromkeys(zip(table["target"], table["benchmark"], table["minus"])))
    fig, axes = _grid(len(panels))
    for ax, (target, bench, ref) in zip(axes, panels):
        t = table[(table["target"] == target) & (table["benchmark"] == bench) & (table["minus"] == ref)]
        y = np.arange(len(t))
        ax.errorbar(t["delta"], y, xerr=np.vstack([t["delta"] - t["lo"], t["hi"] - t["delta"]]).clip(min=0),
                    fmt="o", color="#7b2d8b", capsize=3)  # fmt: skip
        ax.axvline(0, color="#999999", lw=1)
        ax.set_yticks(y, t["arm"])
        ax.set_title(f"minus {ref}: {bench}, {target}")
        ax.set_xlabel("difference (paired 95% CI)")
    save(fig, path)


def source_share(shares: pd.DataFrame, path: Path) -> None:
    targets = list(dict.fromkeys(shares["target"]))
    fig, axes = _grid(len(targets))
    for ax, target in zip(axes, targets):
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
    save(fig, path)


def scores(frame: pd.DataFrame, path: Path) -> None:
    targets = list(dict.fromkeys(frame["target"])) or ["(none)"]
    fig, axes = _grid(len(targets))
    for ax, target in zip(axes, targets):
        t = frame[frame["target"] == target]
        sources = list(dict.fromkeys(t["source"]))
        if sources:
            ax.boxplot([t[t["source"] == s]["mean_logprob"].values for s in sources], showmeans=True)
            ax.set_xticks(range(1, len(sources) + 1), sources)
        ax.set_title(f"mean log-prob under {target}")
        ax.set_ylabel("mean log-prob per response token")
    save(fig, path)


def loss_curves(curves: pd.DataFrame, path: Path) -> None:
    """SFT training loss per logged step, one line per arm, one panel per target."""
    targets = list(dict.fromkeys(curves["target"])) or ["(none)"]
    fig, axes = _grid(len(targets))
    for ax, target in zip(axes, targets):
        t = curves[curves["target"] == target]
        for arm in dict.fromkeys(t["arm"]):
            a = t[t["arm"] == arm]
            ax.plot(a["step"], a["loss"], marker=".", label=arm, color="#7b2d8b" if arm == "grape" else None)
        ax.set_title(f"SFT loss, target: {target}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (response tokens)")
        ax.legend(fontsize=7)
    save(fig, path)
