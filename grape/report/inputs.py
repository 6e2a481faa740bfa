"""The report's input files: which evaluation, model, selection and score file belongs to which (target, arm,
benchmark), checked against the order the workflow lists them, and the evaluations read with every row checked."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Mapping, Sequence

from grape import layout
from grape.contracts import EVAL_SAMPLE
from grape.io import DataError, check_row, read_json


@dataclass
class Inputs:
    """The report's input files, in the order the workflow lists them (targets outer, arms inner)."""

    evals: Sequence[str]  # evaluate/<target>/<arm>/<benchmark>.json for arm in [base, *arms], benchmark in tasks
    trained: Sequence[str]  # sft/<target>/<arm>/ for arm in arms
    selections: Sequence[str]  # selections/<target>/<arm>.jsonl for arm in arms
    scores: Sequence[str]  # scores/<target>/base.jsonl
    verify_counts: str  # pool/verify_counts.json
    candidates: Sequence[str] = ()  # candidates/<source>.jsonl (their meta.json holds the sampling cost)

    def keyed(self, params: Mapping) -> dict:
        """Map each (target, arm) to its files, checking that the names agree with the order."""
        targets, arms = list(params["targets"]), list(params["arms"])
        out = {"evals": {}, "trained": {}, "selections": {}, "scores": {}}
        where = {"trained": layout.model, "selections": layout.selection, "scores": layout.scores}  # grape.layout
        for field, keys in (
            ("trained", list(product(targets, arms))),
            ("selections", list(product(targets, arms))),
            ("scores", [(t, "base") for t in targets]),  # scores/<target>/base.jsonl: the untuned target's
        ):
            paths = list(getattr(self, field))
            if len(paths) != len(keys):
                raise ValueError(f"report: {len(paths)} {field} files for {len(keys)} expected ({keys})")
            for (target, arm), path in zip(keys, paths):
                if not Path(path).as_posix().rstrip("/").endswith(where[field](target, arm)):
                    raise ValueError(f"report: {path} is not the {field} file of {target}/{arm}")
                out[field][target if field == "scores" else (target, arm)] = Path(path)
        benches = list(params["benchmarks"])  # evaluate/<target>/<arm>/<benchmark>.json, one job each
        keys = list(product(targets, ["base", *arms], benches))
        if len(self.evals) != len(keys):
            raise ValueError(f"report: {len(self.evals)} evaluation files for {len(keys)} expected ({keys})")
        for (target, arm, bench), path in zip(keys, self.evals):
            if not Path(path).as_posix().endswith(layout.evaluation(target, arm, bench)):
                raise ValueError(f"report: {path} is not the evaluation of {target}/{arm} on {bench}")
            out["evals"].setdefault((target, arm), []).append(Path(path))
        return out


def eval_benchmarks(paths: Sequence[Path]) -> dict:
    """The benchmarks of one model's evaluation files (one per benchmark), every per-problem row checked (file and
    field named on a bad one)."""
    benches = {}
    for path in paths:
        ev = read_json(path)
        found = ev.get("benchmarks") if isinstance(ev, dict) else None
        if not found:
            raise DataError(path, None, "benchmarks", "missing or empty: expected the benchmark's entry")
        for name, res in found.items():
            benches[name] = res
            if "not_run" in res:
                continue
            if not res.get("samples"):
                raise DataError(
                    path, None, f"benchmarks.{name}.samples", "missing or empty: expected lm-eval's results"
                )
            for sample in res["samples"]:
                check_row(path, None, sample, EVAL_SAMPLE)
            if res.get("sandbox", "bwrap") not in ("bwrap", "none"):
                raise DataError(
                    path, None, f"benchmarks.{name}.sandbox", f"expected bwrap or none, got {res['sandbox']!r}"
                )
            for field, top in (("lc_win_rate", 100.0), ("lc_standard_error", math.inf)):  # AlpacaEval 2's LC
                x = res.get(field)
                if x is not None and not (isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= top):
                    raise DataError(
                        path, None, f"benchmarks.{name}.{field}", f"expected a number in [0, {top}], got {x!r}"
                    )
    return benches
