"""`grape select` checks every row where it enters: an impossible score, a score of a candidate the pool lacks, or a
pool row that is not a POOL row stops the real command with `file:line: field 'x'` (both readers: the column reader
and the row reader it hands a file to); a valid input gives the same selection as ever."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from grape import cli, columns, select
from grape import config as gconfig
from grape.io import DataError

PARAMS = {"seed": 0, "arm": "grape", "target": "t", "template": {}, "threads": 1,
          "select": {"k": 1, "strongest_source": "b", "original_sources": ["original"], "exclude_self": True}}  # fmt: skip
SCORE = {"q0:original:0": -3.0, "q0:a:0": -1.0, "q0:b:0": -0.5, "q1:original:0": -0.25, "q1:a:0": -1.0,
         "q1:b:0": -1.0, "q2:original:0": -5.0, "q2:a:0": -2.0, "q2:b:0": 0.0}  # fmt: skip
PICKED = ["q0:b:0", "q1:original:0", "q2:b:0"]  # argmax per instruction (0.0: a possible log-prob, the best)


def _pool_rows() -> list[dict]:
    rows = []
    for cid in SCORE:
        iid, source = cid.split(":")[:2]
        rows.append({"candidate_id": cid, "instruction_id": iid, "instruction": f"Q {iid}?", "response": f"resp {cid}",
                     "source": source, "sample_index": 0, "correct": None})  # fmt: skip
    return rows


def _score_rows() -> list[dict]:
    return [{"candidate_id": cid, "instruction_id": cid.split(":")[0], "source": cid.split(":")[1], "n_tokens": 4,
             "sum_logprob": 4 * s, "mean_logprob": s, "truncated": False} for cid, s in SCORE.items()]  # fmt: skip


def _write(path, rows, raw: dict[int, str] | None = None):
    """Rows as JSONL; `raw` replaces line i (0-based) by a hand-written one (NaN literals and the like)."""
    lines = [json.dumps(r) for r in rows]
    for i, text in (raw or {}).items():
        lines[i] = text
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _select(tmp_path, pool, scores=None, arm="grape") -> int:
    """`grape select` as the command line runs it; its exit status."""
    args = ["select", "--params", json.dumps({**PARAMS, "arm": arm}), "--pool", str(pool)]
    args += ["--scores", str(scores)] if scores else []
    return cli.main([*args, "--output", str(tmp_path / "sel.jsonl")])


@pytest.fixture(params=["columns", "rows"])
def reader(request, monkeypatch):
    """Both readers: pyarrow's (the default), and the row reader it hands any file it cannot take cleanly to."""
    if request.param == "rows":

        def unreadable(*a, **kw):
            raise columns.Unreadable("forced")
            yield  # a generator, as the real one

        monkeypatch.setattr(columns, "batches", unreadable)
    return request.param


def _score_line(value: str, field: str = "mean_logprob", i: int = 1) -> str:
    """Score row `i` (0-based) with `field` written as `value`, verbatim."""
    row = json.dumps({**_score_rows()[i], field: 0}).replace(f'"{field}": 0', f'"{field}": {value}')
    assert value in row
    return row


@pytest.mark.parametrize(
    "line, field, words",
    [
        (_score_line("12345"), "mean_logprob", "<= 0"),
        (_score_line("0.001"), "mean_logprob", "<= 0"),
        (_score_line("NaN"), "mean_logprob", "NaN"),
        (_score_line("Infinity"), "mean_logprob", "Infinity"),
        (_score_line("-Infinity"), "mean_logprob", "Infinity"),
        (_score_line("1e400"), "mean_logprob", ""),
        (_score_line("0", "n_tokens"), "n_tokens", ">= 1"),
        (_score_line("-3", "n_tokens"), "n_tokens", ">= 1"),
        (_score_line("2.5", "n_tokens"), "n_tokens", "integer"),
        (_score_line("7", "sum_logprob"), "sum_logprob", "<= 0"),
        (_score_line('"-1.0"'), "mean_logprob", "number"),
        (_score_line("-0.9"), "mean_logprob", "is not sum_logprob / n_tokens = -4.0 / 4 = -1.0"),  # an edited mean
        (_score_line("5", "n_tokens"), "mean_logprob", "= -4.0 / 5 = -0.8"),  # a mean over other tokens
        (json.dumps({**_score_rows()[1], "candidate_id": "q9:a:0"}), "candidate_id", "not in the pool"),
    ],
)
def test_impossible_scores_stop_select_naming_file_line_and_field(tmp_path, capsys, reader, line, field, words):
    pool = _write(tmp_path / "pool.jsonl", _pool_rows())
    scores = _write(tmp_path / "scores.jsonl", _score_rows(), {1: line})
    capsys.readouterr()
    assert _select(tmp_path, pool, scores) == 2
    err = capsys.readouterr().err
    assert f"grape select: error: {scores}:2: field '{field}': " in err and words in err, err
    assert "Traceback" not in err and "settings" not in err
    assert not (tmp_path / "sel.jsonl").exists()


def _pool_line(**change) -> str:
    row = {**_pool_rows()[3]}
    for k, v in change.items():
        if v is KeyError:
            row.pop(k)
        else:
            row[k] = v
    return json.dumps(row)


@pytest.mark.parametrize("arm", ["grape", "all", "original"])
@pytest.mark.parametrize(
    "line, field, words",
    [
        (_pool_line(response=""), "response", "empty"),
        (_pool_line(response=" \n"), "response", "empty"),
        (_pool_line(response=7), "response", "expected string"),
        (_pool_line(response=None), "response", "expected string"),
        (_pool_line(response=KeyError), "response", "missing"),
        (_pool_line(instruction=KeyError), "instruction", "missing"),
        (_pool_line(instruction=""), "instruction", "empty"),
        (_pool_line(context="earlier turns"), "context", "expected list"),
        (_pool_line(context=[{"role": "user", "content": 5}]), "context", "item 0"),
        (_pool_line(context=["hi"]), "context", "item 0"),
        (_pool_line(task=""), "task", "empty"),
        (_pool_line(answer=3), "answer", "expected string"),
        (_pool_line(correct="yes"), "correct", "expected boolean"),
        (_pool_line(sample_index=True), "sample_index", "expected integer"),
        (_pool_line(sample_index=1.5), "sample_index", "expected integer"),
        (_pool_line(source=""), "source", "empty"),
    ],
)
def test_pool_rows_that_are_not_pool_rows_stop_select(tmp_path, capsys, reader, arm, line, field, words):
    """The third row is q1:original:0, which every arm here selects; a bad row is an error for every arm."""
    pool = _write(tmp_path / "pool.jsonl", _pool_rows(), {3: line})
    scores = _write(tmp_path / "scores.jsonl", _score_rows()) if arm == "grape" else None
    capsys.readouterr()
    assert _select(tmp_path, pool, scores, arm) == 2
    err = capsys.readouterr().err
    assert f"grape select: error: {pool}:4: field '{field}': " in err and words in err, err
    assert "Traceback" not in err and "settings" not in err
    assert not (tmp_path / "sel.jsonl").exists()


def test_a_valid_input_selects_what_it_always_did(tmp_path, capsys, reader):
    pool = _write(tmp_path / "pool.jsonl", _pool_rows())
    scores = _write(tmp_path / "scores.jsonl", _score_rows())
    assert _select(tmp_path, pool, scores) == 0
    rows = [json.loads(line) for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert [r["candidate_id"] for r in rows] == PICKED
    assert [r["mean_logprob"] for r in rows] == [-0.5, -0.25, 0.0]
    assert rows[1] == {
        "prompt": "Question: Q q1?\nAnswer:",
        "completion": " resp q1:original:0",
        "instruction_id": "q1",
        "candidate_id": "q1:original:0",
        "source": "original",
        "mean_logprob": -0.25,
        "messages": [{"role": "user", "content": "Q q1?"}, {"role": "assistant", "content": "resp q1:original:0"}],
    }
    assert _select(tmp_path, pool, None, "all") == 0
    assert len((tmp_path / "sel.jsonl").read_text().splitlines()) == len(SCORE)


def test_the_real_command_exits_nonzero_naming_the_line(tmp_path):
    pool = _write(tmp_path / "pool.jsonl", _pool_rows())
    scores = _write(tmp_path / "scores.jsonl", _score_rows(), {4: _score_line("Infinity", i=4)})
    args = ["--params", json.dumps(PARAMS), "--pool", pool, "--scores", scores, "--output", tmp_path / "sel.jsonl"]
    proc = subprocess.run([sys.executable, "-m", "grape", "select", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{scores}:5: field 'mean_logprob': " in proc.stderr and "Traceback" not in proc.stderr


def test_a_pool_row_changed_after_indexing_is_caught_when_read_back(tmp_path, monkeypatch):
    """The rows written are checked again when read back by offset: a row that changed in between is named."""
    pool = _write(tmp_path / "pool.jsonl", _pool_rows())
    scores = _write(tmp_path / "scores.jsonl", _score_rows())
    real = select.index.pool_index

    def then_damage(path, ids=None):
        out = real(path, ids)
        _write(pool, _pool_rows(), {3: _pool_line(response="")})  # the row's own offset still holds
        return out

    monkeypatch.setattr(select.index, "pool_index", then_damage)
    with pytest.raises(DataError, match=rf"{re.escape(str(pool))}:4: field 'response': empty"):
        select.run({**PARAMS}, str(pool), str(scores), str(tmp_path / "sel.jsonl"))


def test_missing_settings_are_the_configs_and_other_key_errors_are_not(tmp_path, capsys, monkeypatch):
    pool = _write(tmp_path / "pool.jsonl", _pool_rows())
    args = ["select", "--pool", str(pool), "--output", str(tmp_path / "sel.jsonl"), "--params"]
    broken = {**PARAMS, "arm": "random", "select": {"strongest_source": None}}
    assert cli.main([*args, json.dumps(broken)]) == 2
    assert "the stage's settings lack the key 'select.k'" in capsys.readouterr().err

    def bug(*a):
        raise KeyError("response")

    monkeypatch.setattr(select, "run", bug)  # a KeyError that is not a setting's: not blamed on the config
    with pytest.raises(KeyError, match="response"):
        cli.main([*args, json.dumps(PARAMS)])
    assert isinstance(gconfig.ConfigKeyError("x"), KeyError) and str(gconfig.ConfigKeyError("x")) == "x"


@pytest.mark.parametrize("value, words", [("0.5", "<= 0, got 0.5"), ("NaN", "NaN")])
def test_score_gather_checks_the_shards_it_joins(tmp_path, capsys, value, words):
    """The score stage's own outputs are checked where `score-gather` reads them, and never written with NaN."""
    from grape import score

    shards = [_write(tmp_path / "s0.jsonl", _score_rows()[:4]), _write(tmp_path / "s1.jsonl", _score_rows()[4:])]
    skipped = [_write(tmp_path / f"k{i}.jsonl", []) for i in range(2)]
    _write(shards[1], _score_rows()[4:], {2: _score_line(value, i=6)})
    with pytest.raises(DataError, match=rf"{re.escape(str(shards[1]))}:3: field 'mean_logprob': .*{words}"):
        score.gather(
            [str(p) for p in shards], [str(p) for p in skipped], str(tmp_path / "s.jsonl"), str(tmp_path / "k")
        )
    assert not (tmp_path / "s.jsonl").exists()
