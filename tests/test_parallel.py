"""One result whatever the machinery: select writes the same file for 1 and 2 worker processes; the column
readers (pyarrow) give the same output as the row reader and hand bad files to it, which names the line."""

from __future__ import annotations

import json
import random

import pytest

from grape import columns, select, verify
from grape.io import DataError

TEMPLATE = {"prompt": "Question: {instruction}\nAnswer:", "response": " {response}", "score_eos": False}


@pytest.fixture
def two_workers(monkeypatch):
    monkeypatch.setattr(select, "workers", lambda requested: requested or 1)  # 2 even on a 1-core runner
    monkeypatch.setattr(select, "MIN_PARALLEL", 1)  # fork for small inputs too


def _inputs(tmp_path, n=300):
    rng = random.Random(0)
    train, cands = tmp_path / "train.jsonl", tmp_path / "a.jsonl"
    with open(train, "w") as t, open(cands, "w") as c:
        for i in range(n):
            answer = rng.randint(1, 50)
            row = {"id": f"q{i:04d}", "instruction": f"What is {answer} + 0?", "answer": str(answer),
                   "responses": [{"response": f"The answer is {answer}.", "source": "original"}]}  # fmt: skip
            t.write(json.dumps(row) + "\n")
            for k in range(3):
                said = answer if rng.random() < 0.7 else answer + 1
                c.write(json.dumps({"candidate_id": f"q{i:04d}:a:{k}", "instruction_id": f"q{i:04d}",
                                    "instruction": row["instruction"], "response": f"It is {said}.",
                                    "source": "a", "sample_index": k}) + "\n")  # fmt: skip
    return train, cands


def _verify(tmp_path, train, cands, name):
    params = {"verify": {"drop_incorrect": True, "unverifiable": "error"}, "sources": ["a"]}
    meta = verify.run(params, str(train), [str(cands)], str(tmp_path / f"{name}.jsonl"), str(tmp_path / f"{name}.json"))
    return tmp_path / f"{name}.jsonl", meta["reader"]


def test_verify_readers_and_select_workers_write_the_same_files(tmp_path, monkeypatch, two_workers):
    train, cands = _inputs(tmp_path)
    (one, reader_one) = _verify(tmp_path, train, cands, "one")

    def unreadable(*args, **kwargs):
        raise columns.Unreadable("forced")

    monkeypatch.setattr(columns, "rows", unreadable)  # the Python row reader must write the same pool
    (two, reader_two) = _verify(tmp_path, train, cands, "two")
    assert (reader_one, reader_two) == ("columns", "rows")
    assert (
        one.read_bytes() == two.read_bytes()
        and (tmp_path / "one.json").read_text() == (tmp_path / "two.json").read_text()
    )
    scores = tmp_path / "scores.jsonl"
    rng = random.Random(1)
    scores.write_text("".join(
        json.dumps({"candidate_id": r["candidate_id"], "instruction_id": r["instruction_id"], "source": r["source"],
                    "n_tokens": 5, "sum_logprob": 5 * m, "mean_logprob": m, "truncated": False}) + "\n"
        for r, m in ((r, -rng.random()) for r in map(json.loads, one.read_text().splitlines()))
    ))  # fmt: skip
    for arm in ("grape", "random", "all", "original"):
        outs = []
        for threads in (1, 2):
            params = {"seed": 0, "arm": arm, "target": "t", "threads": threads, "template": TEMPLATE,
                      "select": {"k": 1, "strongest_source": None, "original_sources": ["original"]}}  # fmt: skip
            out = tmp_path / f"{arm}{threads}.jsonl"
            select.run(params, str(one), str(scores) if arm == "grape" else None, str(out))
            outs.append(out.read_bytes())
        assert outs[0] == outs[1], arm


def test_bad_rows_are_named_by_file_and_line(tmp_path):
    train, cands = _inputs(tmp_path, n=60)
    lines = cands.read_text().splitlines()
    bad = json.loads(lines[150])
    bad["sample_index"] = "two"
    lines[150] = json.dumps(bad)
    cands.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"a.jsonl:151: field 'sample_index': expected integer"):
        _verify(tmp_path, train, cands, "bad")
    lines[150] = lines[10]  # a duplicate id, far from its first copy
    cands.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"a.jsonl:151: field 'candidate_id': duplicate"):
        _verify(tmp_path, train, cands, "dup")


def test_the_column_reader_hands_bad_pools_to_the_row_reader(tmp_path):
    rows = [{"candidate_id": f"c{i}", "instruction_id": "q", "instruction": "x", "response": "y", "source": "s",
             "sample_index": 0, "correct": None} for i in range(5)]  # fmt: skip
    pool = tmp_path / "pool.jsonl"
    for mutate, message in (
        (lambda r: r.update(sample_index=1.5), r"pool.jsonl:4: field 'sample_index'"),
        (lambda r: r.update(candidate_id="c0"), r"pool.jsonl:4: field 'candidate_id': duplicate"),
        (lambda r: r.pop("source"), r"pool.jsonl:4: field 'source': missing"),
        (lambda r: r.update(source=" "), r"pool.jsonl:4: field 'source': empty"),
    ):
        bad = [dict(r) for r in rows]
        mutate(bad[3])
        pool.write_text("".join(json.dumps(r) + "\n" for r in bad))
        with pytest.raises(DataError, match=message):
            select.index.pool_index(str(pool))
    pool.write_text("\n" + "".join(json.dumps(r) + "\n\n" for r in rows))  # blank lines: offsets still line up
    groups, n = select.index.pool_index(str(pool))
    text = pool.read_bytes()
    assert n == 5 and all(
        text[c["at"] :].startswith(b'{"candidate_id": "' + c["candidate_id"].encode()) for c in groups["q"]
    )


def _pairs_file(path, n=400):
    """One pair per row, for the generic importer: repeats, blank responses (dropped and listed), two sources."""
    rng = random.Random(2)
    with open(path, "w") as fh:
        for i in range(n):
            q = f"Question number {rng.randint(0, n // 3)}?"
            response = "" if i % 37 == 5 else f"Answer {rng.randint(0, 3)}."
            fh.write(json.dumps({"q": q, "a": response, "m": f"model{i % 2}"}) + "\n")
            if i % 50 == 0:
                fh.write("\n")  # blank lines are skipped, line numbers still count them


def test_import_writes_the_same_files_for_one_and_two_processes(tmp_path, monkeypatch):
    from grape import data, parallel
    from grape.data import source

    pairs = tmp_path / "pairs.jsonl"
    _pairs_file(pairs)
    monkeypatch.setattr(source, "MIN_PART_BYTES", 1)  # split a small file too
    monkeypatch.setattr(data, "workers", lambda requested: requested or 1)  # 2 even on a 1-core runner
    monkeypatch.setattr(parallel, "workers", lambda requested: requested or 1)
    params = {"seed": 0, "data": {"kind": "generic", "path": str(pairs), "min_responses": 1,
                                  "fields": {"instruction": "q", "response": "a", "source": "m"}}}  # fmt: skip
    outs = []
    for threads in (1, 2):
        d = tmp_path / f"t{threads}"
        counts = data.run({**params, "threads": threads}, str(d / "train.jsonl"), str(d / "test.jsonl"),
                          str(d / "dropped.jsonl"))  # fmt: skip
        outs.append(((d / "train.jsonl").read_bytes(), (d / "dropped.jsonl").read_bytes(),
                     {k: v for k, v in counts.items() if k != "workers"}))  # fmt: skip
        assert counts["workers"] == threads
    assert outs[0] == outs[1]
    dropped = [json.loads(x) for x in outs[0][1].splitlines()]
    lines = pairs.read_text().splitlines()
    assert dropped and all(json.loads(lines[int(r["where"].rsplit(":", 1)[1]) - 1])["a"] == "" for r in dropped)
    assert outs[0][2]["rows_read"] == 400 and outs[0][2]["dropped_empty_response"] == len(dropped)
    assert not list(tmp_path.rglob(".grape-group-*"))  # partition files removed
    lines[301] = '{"q": "x", "a": 3}'  # a wrong type in the second byte range: the file's own line is named
    pairs.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"pairs.jsonl:302: field 'a'"):
        data.run({**params, "threads": 2}, str(tmp_path / "x.jsonl"), str(tmp_path / "y.jsonl"))
    assert not list(tmp_path.rglob(".grape-group-*")) and not (tmp_path / "x.jsonl").exists()
