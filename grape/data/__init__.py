"""The `data` stage: the train instructions (each with the dataset's own response) and a held-out test split.

Reads: whatever the importer named by `data.kind` reads (nothing for `demo`; `data.train_path` and
`data.test_path` for `jsonl`). Writes: `data/train.jsonl` (`grape.contracts.TRAIN`) and `data/test.jsonl`
(`grape.contracts.TEST`). A new importer is a module here with `load(data_cfg, seed) -> (train, test, counts)`,
added to `IMPORTERS` and to the `data.kind` enum of the schema.
"""

from __future__ import annotations

import importlib
from typing import Mapping

from grape.io import write_jsonl

# data.kind -> module with load(data_cfg, seed) -> (train rows, test rows, counts)
IMPORTERS = {"demo": "grape.data.demo", "jsonl": "grape.data.jsonl"}


def importer(kind: str):
    if kind not in IMPORTERS:
        raise ValueError(f"data.kind {kind!r} is not one of {sorted(IMPORTERS)}")
    return importlib.import_module(IMPORTERS[kind])


def run(params: Mapping, train_out: str, test_out: str) -> dict:
    d = params["data"]
    train, test, counts = importer(d["kind"]).load(d, params["seed"])
    for rows, what in ((train, "train"), (test, "test")):
        if not rows:
            raise ValueError(f"data.kind {d['kind']!r} produced no {what} rows")
    write_jsonl(train_out, train)
    write_jsonl(test_out, test)
    return {"train": len(train), "test": len(test), **counts}
