"""Short forms of the scoring API for tests: one backend under the checkpointed driver, as the stage runs it."""

from __future__ import annotations

from grape.score.checkpoint import score_pool
from grape.score.packed import PackedScorer
from grape.score.reference import ReferenceScorer


def score_reference(model, tok, template, rows, max_length, overlong="skip", progress=False, **driver):
    return score_pool(ReferenceScorer(model), tok, template, rows, max_length, overlong, progress=progress, **driver)


def score_packed(
    model,
    tok,
    template,
    rows,
    max_length,
    overlong="skip",
    *,
    chunk_size=None,
    partial_path=None,
    on_chunk=None,
    progress=False,
    **engine,
):
    return score_pool(
        PackedScorer(model, **engine),
        tok,
        template,
        rows,
        max_length,
        overlong,
        chunk_size=chunk_size,
        partial_path=partial_path,
        on_chunk=on_chunk,
        progress=progress,
    )
