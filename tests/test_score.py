"""The reference scorer against an independent computation (HF's own label loss), and the overlong policy."""

from __future__ import annotations

import math

import pytest

from grape.score import fit_to_length, score_reference
from grape.template import Template


def _rows():
    out = []
    for i, (q, resps) in enumerate([("Tom has 3 apples and gets 2 more. How many?", ["5", "3 + 2 = 5. The answer is 5."]),
                                    ("What is 7 minus 4?", ["7 - 4 = 3", "The answer is 3.", "It is three"])]):
        for k, resp in enumerate(resps):
            out.append({"candidate_id": f"q{i}:s:{k}", "instruction_id": f"q{i}", "instruction": q,
                        "response": resp, "source": "s"})
    return out


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
