"""Bad input gets an error naming file, line and field; writes are atomic."""

from __future__ import annotations

import json

import pytest

from grape.io import DataError, Field, atomic_path, read_jsonl, write_jsonl

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
