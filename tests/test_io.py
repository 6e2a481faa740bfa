"""Bad input gets an error naming file, line and field; writes are atomic."""

from __future__ import annotations

import json
import math

import orjson
import pytest

from grape.io import DataError, Field, atomic_path, check_row, iter_jsonl, read_jsonl, write_jsonl

SPEC = {"id": Field((str,), True, True), "response": Field((str,), True, True), "n": Field((int,), False, False)}


def _write(path, lines):
    path.write_bytes(b"".join(line if isinstance(line, bytes) else line.encode() + b"\n" for line in lines))
    return path


def _error(path, **kw) -> str:
    with pytest.raises(DataError) as err:
        read_jsonl(path, SPEC, **kw)
    return str(err.value)


def test_reads_valid_rows_and_skips_blank_lines(tmp_path):
    p = _write(tmp_path / "ok.jsonl", ['{"id": "a", "response": "x"}', "", '{"id": "b", "response": "y", "n": 3}'])
    assert [r["id"] for r in read_jsonl(p, SPEC, unique="id")] == ["a", "b"]


@pytest.mark.parametrize(
    "lines, line_no, field, words",
    [
        (['{"id": "a", "response": "x"}', '{"id": "b", "response": '], 2, None, "JSON"),
        (['{"id": "a"}'], 1, "response", "missing"),
        (['{"id": "a", "response": ""}'], 1, "response", "empty"),
        (['{"id": "a", "response": "   "}'], 1, "response", "empty"),
        (['{"id": "a", "response": 5}'], 1, "response", "string"),
        (['{"id": "a", "response": "x", "n": "3"}'], 1, "n", "integer"),
        (["[1, 2]"], 1, None, "object"),
    ],
)
def test_bad_rows_name_file_line_field(tmp_path, lines, line_no, field, words):
    p = _write(tmp_path / "bad.jsonl", lines)
    msg = _error(p)
    assert f"bad.jsonl:{line_no}" in msg
    if field:
        assert f"'{field}'" in msg
    assert words.lower() in msg.lower()


def test_duplicate_id_names_both_lines(tmp_path):
    p = _write(
        tmp_path / "dup.jsonl",
        ['{"id": "a", "response": "x"}', '{"id": "b", "response": "y"}', '{"id": "a", "response": "z"}'],
    )
    msg = _error(p, unique="id")
    assert "dup.jsonl:3" in msg and "'id'" in msg and "line 1" in msg


def test_bad_utf8_names_line(tmp_path):
    p = _write(tmp_path / "enc.jsonl", ['{"id": "a", "response": "x"}', b'{"id": "b", "response": "\xff\xfe"}\n'])
    msg = _error(p)
    assert "enc.jsonl:2" in msg and "UTF-8" in msg


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    out = tmp_path / "out.jsonl"

    def rows():
        yield {"id": "a"}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(out, rows())
    assert list(tmp_path.iterdir()) == []
    write_jsonl(out, [{"id": "a", "text": "é"}])
    assert json.loads(out.read_text(encoding="utf-8"))["text"] == "é"


def test_atomic_directory(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_path(out, directory=True) as tmp:
            (tmp / "w.bin").write_bytes(b"0")
            raise RuntimeError("killed")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic_path(out, directory=True) as tmp:
        (tmp / "w.bin").write_bytes(b"1")
    assert (out / "w.bin").read_bytes() == b"1"


BOUNDED = {
    "id": Field((str,), True, True),
    "logprob": Field((int, float), True, False, "", (-math.inf, 0)),
    "n": Field((int,), True, False, "", (1, math.inf)),
    "p": Field((int, float, type(None)), False, False, "", (0, 1)),
}


@pytest.mark.parametrize("loads", [json.loads, orjson.loads], ids=["json", "orjson"])
@pytest.mark.parametrize(
    "line, field, words",
    [
        ('{"id": "a", "logprob": 0.5, "n": 1}', "logprob", "finite number <= 0, got 0.5"),
        ('{"id": "a", "logprob": NaN, "n": 1}', "logprob", "NaN"),
        ('{"id": "a", "logprob": -Infinity, "n": 1}', "logprob", "Infinity"),
        ('{"id": "a", "logprob": -1, "n": 0}', "n", "finite number >= 1, got 0"),
        ('{"id": "a", "logprob": -1, "n": -5}', "n", ">= 1, got -5"),
        ('{"id": "a", "logprob": -1, "n": 1, "p": 1.5}', "p", "in [0, 1]"),
        ('{"id": "a", "logprob": -1, "n": 1, "p": -1e400}', "p", ""),
        ('{"id": "a", "logprob": -1, "n": 1, "extra": {"x": [Infinity]}}', "extra", "NaN, Infinity"),
    ],
)
def test_numbers_outside_their_range_and_non_finite_literals_name_their_field(tmp_path, loads, line, field, words):
    """Both readers agree: a value out of its field's bounds, and NaN/Infinity anywhere (not JSON, which orjson
    refuses and Python's json would take), stop the read at that line and field."""
    p = _write(tmp_path / "n.jsonl", ['{"id": "ok", "logprob": 0, "n": 1, "p": null}', line])
    with pytest.raises(DataError) as err:
        list(iter_jsonl(p, BOUNDED, loads=loads))
    assert str(err.value).startswith(f"{p}:2: field '{field}': ") and words in str(err.value), str(err.value)


def test_bounds_hold_for_rows_checked_in_memory_too():
    check_row("x", 1, {"id": "a", "logprob": -0.0, "n": 10**30, "p": 0}, BOUNDED)  # the edges are in range
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(DataError, match="field 'logprob': expected a finite number <= 0"):
            check_row("x", 1, {"id": "a", "logprob": bad, "n": 1}, BOUNDED)


def test_writes_refuse_nan_naming_the_row_and_field(tmp_path):
    out = tmp_path / "s.jsonl"
    with pytest.raises(DataError, match=r"s.jsonl:2: field 'mean_logprob': NaN/Infinity"):
        write_jsonl(out, [{"mean_logprob": -1.0}, {"candidate_id": "c", "mean_logprob": float("nan")}])
    assert list(tmp_path.iterdir()) == []


def test_a_line_only_orjson_refuses_is_malformed_not_non_finite(tmp_path):
    p = _write(tmp_path / "s.jsonl", ['{"id": "a", "logprob": -1, "n": 1, "x": "\\ud800"}'])
    with pytest.raises(DataError, match=r"s.jsonl:1: malformed JSON: .*surrogate") as err:
        list(iter_jsonl(p, BOUNDED, loads=orjson.loads))
    assert "NaN" not in str(err.value)
