"""The reference scorer against an independent computation (HF's own label loss), and the overlong policy."""

from __future__ import annotations

import math

import pytest
from helpers import score_reference

from grape.score.tokens import fit_to_length
from grape.template import Template


def _rows():
    out = []
    for i, (q, resps) in enumerate(
        [
            ("Tom has 3 apples and gets 2 more. How many?", ["5", "3 + 2 = 5. The answer is 5."]),
            ("What is 7 minus 4?", ["7 - 4 = 3", "The answer is 3.", "It is three"]),
        ]
    ):
        for k, resp in enumerate(resps):
            out.append(
                {
                    "candidate_id": f"q{i}:s:{k}",
                    "instruction_id": f"q{i}",
                    "instruction": q,
                    "response": resp,
                    "source": "s",
                }
            )
    return out


def stage_params(**score) -> dict:
    """The score stage's config slice, defaults of the tests plus `score` overrides."""
    base = {
        "backend": "packed",
        "max_length": 512,
        "overlong": "skip",
        "token_budget": None,
        "head_chunk": 64,
        "chunk_size": 8,
        "shards": 1,
        "dtype": "auto",
        "fidelity_sample": 64,
        "fidelity_tie": 0.01,
    }
    return {"threads": 2, "seed": 0, "template": {}, "score": {**base, **score}}


def test_reference_matches_label_loss(tiny):
    import torch

    model, tok = tiny
    t = Template()
    scored, skipped = score_reference(model, tok, t, _rows(), max_length=512, progress=False)
    assert not skipped and len(scored) == 5
    for row, s in zip(_rows(), scored):
        p, r = t.tokenize(tok, row["instruction"], row["response"])
        ids = torch.tensor([p + r])
        labels = ids.clone()
        labels[0, : len(p)] = -100
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss.item()  # mean NLL over response tokens
        assert s["n_tokens"] == len(r)
        assert s["mean_logprob"] == pytest.approx(-loss, abs=1e-5)
        assert s["sum_logprob"] == pytest.approx(s["mean_logprob"] * len(r), rel=1e-9)
        assert s["sum_logprob"] < 0 and math.isfinite(s["sum_logprob"])


def test_score_eos_adds_a_token(tiny):
    model, tok = tiny
    a, _ = score_reference(model, tok, Template(), _rows()[:1], 512, progress=False)
    b, _ = score_reference(model, tok, Template(score_eos=True), _rows()[:1], 512, progress=False)
    assert b[0]["n_tokens"] == a[0]["n_tokens"] + 1


def test_overlong_policy(tiny):
    model, tok = tiny
    rows = _rows()
    p, r = Template().tokenize(tok, rows[1]["instruction"], rows[1]["response"])
    limit = len(p) + 3
    skip, skipped = score_reference(model, tok, Template(), rows, limit, "skip", progress=False)
    trunc, _ = score_reference(model, tok, Template(), rows, limit, "truncate", progress=False)
    assert {s["reason"] for s in skipped} == {"over_context"}
    assert len(skip) + len(skipped) == len(rows)
    assert len(trunc) == len(rows) and any(s["truncated"] for s in trunc)
    assert all(s["n_tokens"] <= 3 for s in trunc if s["instruction_id"] == "q1")


def test_fit_to_length_reasons():
    assert fit_to_length([1] * 10, [2], 10, "truncate") == (None, "skip:prompt_over_context")
    assert fit_to_length([1], [], 10, "skip") == (None, "skip:empty_response")
    assert fit_to_length([1], [2, 3], 10, "skip") == ([2, 3], "ok")
    assert fit_to_length([1] * 8, [2, 3, 4], 10, "truncate") == ([2, 3], "truncated")


@pytest.mark.parametrize("backend", ["reference", "packed"])
def test_stage_caps_max_length_at_the_model_context_and_lists_skips(tiny_model_dir, tmp_path, backend):
    import json

    from grape import score
    from grape.io import read_jsonl

    rows = _rows() + [
        {
            "candidate_id": "q9:s:0",
            "instruction_id": "q9",
            "instruction": "Count.",
            "response": " ".join(["one two three"] * 400),
            "source": "s",
        }
    ]
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({**r, "sample_index": 0, "answer": "1", "correct": True}) + "\n" for r in rows))
    params = stage_params(backend=backend, max_length=4096, head_chunk=64, chunk_size=2)
    out, skipped = tmp_path / "s.jsonl", tmp_path / "k.jsonl"
    counts = score.run(params, str(tiny_model_dir), str(pool), str(out), str(skipped))
    assert counts["max_length"] == 512  # the tiny model's max_position_embeddings
    assert read_jsonl(skipped) == [{"candidate_id": "q9:s:0", "reason": "over_context"}]
    assert [r["candidate_id"] for r in read_jsonl(out)] == sorted(r["candidate_id"] for r in _rows())
    assert not (tmp_path / "s.jsonl.partial").exists()


def test_stage_refuses_an_empty_pool_and_counts_an_empty_shard(tiny_model_dir, tmp_path):
    import json

    from grape import score
    from grape.io import DataError, read_jsonl
    from grape.score.shards import shard_of

    params = stage_params(backend="packed", head_chunk=64, chunk_size=8)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty.jsonl: no rows: expected the candidate pool"):
        score.run(params, str(tiny_model_dir), str(empty), str(tmp_path / "s.jsonl"), str(tmp_path / "k.jsonl"))
    assert not (tmp_path / "s.jsonl").exists()
    rows = _rows()  # two instructions; with 8 shards most shards hold none
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({**r, "sample_index": 0, "answer": "1", "correct": True}) + "\n" for r in rows))
    used = {shard_of(r["instruction_id"], 8) for r in rows}
    idle = min(set(range(8)) - used)
    counts = score.run(
        params,
        str(tiny_model_dir),
        str(pool),
        str(tmp_path / "s.jsonl"),
        str(tmp_path / "k.jsonl"),
        shard=idle,
        shards=8,
    )
    assert counts["instructions"] == 0 and counts["candidates"] == 0 and counts["scored"] == 0
    assert read_jsonl(tmp_path / "s.jsonl") == [] and read_jsonl(tmp_path / "k.jsonl") == []


def test_dtype_auto_follows_the_cpu_and_is_recorded(tiny_model_dir, tmp_path, monkeypatch):
    import json

    from grape import runtime, score

    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "fma"})
    assert runtime.choose_dtype("auto", "cpu")[0] == "float32"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "amx_bf16", "amx_tile"})
    name, why = runtime.choose_dtype("auto", "cpu")
    assert name == "bfloat16" and "amx_bf16" in why
    assert runtime.choose_dtype("float32", "cpu") == ("float32", "asked for in the config")
    with pytest.raises(ValueError, match="dtype must be"):
        runtime.choose_dtype("fp8", "cpu")
    monkeypatch.undo()

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({**r, "sample_index": 0, "correct": None}) + "\n" for r in _rows()))
    params = stage_params(backend="packed", dtype="auto", head_chunk=64, chunk_size=2)
    counts = score.run(params, str(tiny_model_dir), str(pool), str(tmp_path / "s.jsonl"), str(tmp_path / "k.jsonl"))
    assert (counts["dtype"], counts["dtype_reason"]) == runtime.choose_dtype("auto", "cpu")


def test_fidelity_counts_flips_near_ties_and_merges_shards():
    from grape.score import fidelity

    ref = {"a:0": ("a", -1.0), "a:1": ("a", -1.005), "a:2": ("a", -3.0),  # a: a near-tie at the top
           "b:0": ("b", -0.5), "b:1": ("b", -2.0),  # b: a clear winner
           "c:0": ("c", -1.0)}  # fmt: skip
    same = {k: v for k, (_, v) in ref.items()}
    f = fidelity.compare(ref, same, tie=0.01)
    assert (f["instructions"], f["candidates"], f["picks_differ"], f["near_ties"]) == (3, 6, 0, 0)
    assert f["mean_spearman"] == 1.0 and f["max_abs_diff"] == 0.0
    moved = {**same, "a:1": -0.999, "b:1": -0.4}  # a flips within the tie, b flips for real
    f = fidelity.compare(ref, moved, tie=0.01)
    assert (f["picks_differ"], f["near_ties"]) == (2, 1) and f["mean_spearman"] < 1.0
    assert f["max_abs_diff"] == pytest.approx(1.6)
    m = fidelity.merge([f, None, {**f, "max_abs_diff": 2.0, "mean_spearman": 1.0}])
    assert (m["instructions"], m["picks_differ"], m["near_ties"], m["max_abs_diff"]) == (6, 4, 2, 2.0)
    assert m["mean_spearman"] == pytest.approx((f["mean_spearman"] + 1.0) / 2)


def test_a_bf16_run_rescores_a_sample_in_fp32_and_records_what_changed(tiny_model_dir, tmp_path):
    import json

    from grape import score

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({**r, "sample_index": 0, "correct": None}) + "\n" for r in _rows()))
    params = stage_params(backend="packed", dtype="bfloat16", chunk_size=2, fidelity_sample=1, fidelity_tie=0.01)
    counts = score.run(params, str(tiny_model_dir), str(pool), str(tmp_path / "s.jsonl"), str(tmp_path / "k.jsonl"))
    f = counts["dtype_fidelity"]
    assert (f["dtype"], f["reference_dtype"], f["instructions"]) == ("bfloat16", "float32", 1)
    assert f["candidates"] in (2, 3) and 0 < f["max_abs_diff"] < 0.5 and f["picks_differ"] <= 1
    params = stage_params(backend="packed", dtype="float32", chunk_size=2, fidelity_sample=1)
    counts = score.run(params, str(tiny_model_dir), str(pool), str(tmp_path / "t.jsonl"), str(tmp_path / "l.jsonl"))
    assert "dtype_fidelity" not in counts  # fp32 is the reference itself
