"""The `data` stage: the train instructions (each with the dataset's own responses) and a held-out test split.

Reads: whatever the importer named by `data.kind` reads (nothing for `demo`; files or hub datasets otherwise,
docs/importers.md). Writes: `data/train.jsonl` (`grape.contracts.TRAIN`, streamed: a 350K-instruction pool never
sits in memory), `data/test.jsonl` (`TEST`; empty for pools without a held-out split) and `data/dropped.jsonl`
(every input row the importer could not use, with where and why). A new importer is a module here with
`load(data_cfg, seed, tally, workdir) -> (train rows iterable, test rows)`, registered as a plugin of kind
`importer` (`grape.plugins`: a line there, or an entry point of group `grape.importers` from another package). An import that stops (a bad row, an empty input file, no train rows) leaves none of
these files behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from grape.contracts import TEST, TRAIN, TRAIN_RESPONSE
from grape.data.grouping import BELOW_MIN, Grouped, build_parts
from grape.data.tally import Tally
from grape.io import atomic_path, check_row, fast_dumps, read_jsonl, write_jsonl
from grape.parallel import concat, workers


def importer(kind: str):
    """The module `data.kind` names: load(data_cfg, seed, tally, workdir) -> (train rows, test rows)."""
    from grape import plugins

    return plugins.kind("importer").get(kind)


def _checked(rows, tally: Tally, out: str, below_min: bool = False):
    """Importer rows, checked against the contract as they stream by, and counted: the pool's (default), or with
    `below_min` only the instructions below `data.min_responses` (marked `BELOW_MIN` by the importer)."""
    for n, row in enumerate(rows, start=1):
        if bool(row.pop(BELOW_MIN, False)) != below_min:
            continue
        check_row(f"{out} (row {n} from the importer)", None, row, TRAIN)
        for item in row["responses"]:
            check_row(f"{out} (row {n}, responses)", None, item, TRAIN_RESPONSE)
        tally.add("instructions")
        tally.add("pairs", len(row["responses"]))
        yield row


def _no_rows(d: Mapping, tally: Tally) -> ValueError:
    """The error for an import that kept no train rows (raised before the train file is in place: none is left)."""
    inputs = d.get("path") or d.get("train_path") or ", ".join(str(s["path"]) for s in d.get("datasets") or [])
    read = f" from {inputs}" if inputs else ""
    return ValueError(f"data.kind {d['kind']!r} produced no train rows{read}; counts: {dict(tally.counts)}")


def _some(rows, error):
    """`rows`, raising `error()` at their end when there were none: the atomic writer then leaves no file."""
    n = 0
    for row in rows:
        n += 1
        yield row
    if not n:
        raise error()


def _write_grouped(grouped: Grouped, out: str, n_workers: int, error, below_min: bool = False) -> int:
    """A grouped pool's train file, both phases on `n_workers` processes (`grape.data.grouping`): the same file,
    counts and dropped list for any number of them. No train rows: `error()` is raised and no file is left."""
    grouper = grouped.fill(n_workers)
    try:
        with atomic_path(out) as tmp:

            def write_part(rows, tally, j: int) -> int:  # in worker j: its runs of partitions to part file j
                n = 0
                with open(f"{tmp}.{j}", "wb", buffering=1 << 20) as fh:
                    for row in _checked(rows, tally, out, below_min):
                        fh.write(fast_dumps(row) + b"\n")
                        n += 1
                return n

            counts = build_parts(grouped, grouper, n_workers, write_part)
            concat([f"{tmp}.{j}" for j in range(len(counts))], tmp)
            if not sum(counts) and error:
                raise error()
    finally:
        grouper.close()
    return sum(counts)


def run(
    params: Mapping, train_out: str, test_out: str | None, dropped_out: str | None = None, below_min: bool = False
) -> dict:
    """The pool's train rows to `train_out` (and the test split, the dropped rows); with `below_min`, instead, the
    instructions the pool leaves out for having fewer than `data.min_responses` responses (`data/below_min.jsonl`,
    possibly empty), read by the arms that train on every pair."""
    d = {**params["data"], "experiment": params.get("experiment")}
    tally = Tally()
    train, test = importer(d["kind"]).load(d, params["seed"], tally, Path(train_out).parent)
    if d.get("test_path") and d["kind"] != "jsonl":
        test = read_jsonl(d["test_path"], TEST, unique="id", non_empty="test rows {id, instruction, answer}")
    n_workers = workers(params.get("threads"))
    error = None if below_min else lambda: _no_rows(d, tally)
    if isinstance(train, Grouped):
        n = _write_grouped(train, train_out, n_workers, error, below_min)
    else:
        rows = _checked(train, tally, train_out, below_min)
        n = write_jsonl(train_out, _some(rows, error) if error else rows, encode=fast_dumps)
    if test_out:
        write_jsonl(test_out, test)
    if dropped_out:
        write_jsonl(dropped_out, tally.dropped)
    return {
        "train": n,
        "test": len(test),
        **dict(sorted(tally.counts.items())),
        **({"info": tally.info} if tally.info else {}),
        "workers": n_workers,
    }
