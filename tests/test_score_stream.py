"""Streaming scoring: a pool file indexed once and tokenized chunk by chunk gives the rows of the in-memory path.

Real tokenizer and a real (tiny, random) model; no mocks.
"""

from __future__ import annotations

import json
import random

import pytest

from grape import runtime
from grape.io import DataError
from grape.score.checkpoint import score_file, score_pool
from grape.score.packed import PackedScorer
from grape.score.reference import ReferenceScorer
from grape.score.stream import index_file, index_rows, tokenize_chunk, tokenized_chunks
from grape.template import Template

runtime.set_offline()
T = Template()
WORDS = "Tom has apples and gets more so the answer is boxes with each how many does Anna have 3 4 12 + = .".split()


def _pool(n=9, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 20)))
        for k in range(rng.randint(1, 5)):
            resp = " ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 2, rng.randint(3, 40)])))
            rows.append(
                {
                    "candidate_id": f"q{i:02d}:s{k % 2}:{k}",
                    "instruction_id": f"q{i:02d}",
                    "instruction": q,
                    "response": resp,
                    "source": f"s{k % 2}",
                    "sample_index": k,
                    "correct": None,
                }
            )
    rows.append(
        {
            "candidate_id": "zz:s0:0",
            "instruction_id": "zz",
            "instruction": "What is 7 - 4?",
            "response": " ".join(WORDS * 30),
            "source": "s0",
            "sample_index": 0,
            "correct": None,
        }
    )
    rng.shuffle(rows)
    return rows


def _write(path, rows, blank_lines=True):
    text = "".join(json.dumps(r) + "\n" + ("\n" if blank_lines and i % 7 == 3 else "") for i, r in enumerate(rows))
    path.write_text(text)
    return path


def test_batch_tokenization_equals_the_template(tok):
    rows = _pool(5)
    for eos in (False, True):
        t = Template(score_eos=eos)
        prompts = t.tokenize_prompts(tok, [r["instruction"] for r in rows])
        responses = t.tokenize_responses(tok, [r["response"] for r in rows], add_eos=eos)
        for row, p, r in zip(rows, prompts, responses):
            assert (p, r) == t.tokenize(tok, row["instruction"], row["response"], add_eos=eos)


def test_file_stream_equals_rows_in_memory(model, tok, tmp_path):
    rows = _pool()
    path = _write(tmp_path / "pool.jsonl", rows)
    for policy in ("skip", "truncate"):
        mem = score_pool(PackedScorer(model), tok, T, rows, 200, policy, chunk_size=6, progress=False)
        streamed = score_file(lambda: PackedScorer(model), tok, T, path, 200, policy, chunk_size=6, progress=False)
        assert streamed == mem  # the same chunks, the same batches: bit-identical
        assert mem[1] if policy == "skip" else any(r["truncated"] for r in mem[0])
    ref = {
        r["candidate_id"]: r
        for r in score_pool(ReferenceScorer(model), tok, T, rows, 200, "truncate", progress=False)[0]
    }
    for r in mem[0]:
        assert r["mean_logprob"] == pytest.approx(ref[r["candidate_id"]]["mean_logprob"], abs=1e-4)


def test_shards_of_a_file_partition_it(model, tok, tmp_path):
    rows = _pool(12, seed=1)
    path = _write(tmp_path / "pool.jsonl", rows)
    whole = score_file(lambda: PackedScorer(model), tok, T, path, 512, chunk_size=5, progress=False)[0]
    parts, instructions = [], 0
    for i in range(3):
        index = index_file(path, 5, i, 3, progress=False)
        instructions += index.instructions
        parts += score_file(lambda: PackedScorer(model), tok, T, path, 512, chunk_size=5, index=index, progress=False)[
            0
        ]
    assert instructions == len({r["instruction_id"] for r in rows})  # whole instructions per shard
    assert sorted(r["candidate_id"] for r in parts) == [r["candidate_id"] for r in whole]
    by_id = {r["candidate_id"]: r for r in parts}
    for r in whole:
        assert by_id[r["candidate_id"]]["mean_logprob"] == pytest.approx(r["mean_logprob"], abs=1e-5)


def test_index_is_compact_and_plans_whole_instructions(tmp_path):
    rows = _pool(20, seed=2)
    index = index_file(_write(tmp_path / "pool.jsonl", rows), 7, progress=False)
    try:
        assert sorted(index.ids) == sorted(r["candidate_id"] for r in rows)
        assert index.instructions == len({r["instruction"] for r in rows})
        seen = set()
        for chunk in index.chunks:
            assert len(chunk) >= 7 or chunk is index.chunks[-1]
            instr = {r["instruction"] for r in index.fetch(chunk)}
            assert not instr & seen  # an instruction never straddles two chunks
            seen |= instr
        firsts = [min(index.ids[i] for i in chunk) for chunk in index.chunks]
        assert firsts == sorted(firsts)  # canonical order, whatever the file order
    finally:
        index.close()


def test_bad_rows_name_file_line_and_field(tmp_path):
    rows = _pool(3)
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "response": 7}) + "\n")
    with pytest.raises(DataError, match=r"pool.jsonl:2: field 'response'"):
        index_file(path, 4, progress=False)
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[0]) + "\n")
    with pytest.raises(DataError, match=r"pool.jsonl:3: field 'candidate_id': duplicate id .* \(first on line 1\)"):
        index_file(path, 4, progress=False)
    path.write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"pool.jsonl:2: malformed JSON"):
        index_file(path, 4, progress=False)
    path.write_text("\n")
    with pytest.raises(DataError, match=r"no rows: expected the candidate pool"):
        index_file(path, 4, progress=False)


def test_resume_keeps_finished_chunks_and_their_skips(model, tok, tmp_path):
    rows = _pool(10, seed=3)
    path = _write(tmp_path / "pool.jsonl", rows)
    full = score_file(lambda: PackedScorer(model), tok, T, path, 150, chunk_size=5, progress=False)
    assert full[1]  # the long candidate is skipped

    class Stop(Exception):
        pass

    def stop(i, _):
        if i == 1:
            raise Stop

    part = tmp_path / "s.partial"
    with pytest.raises(Stop):
        score_file(
            lambda: PackedScorer(model),
            tok,
            T,
            path,
            150,
            chunk_size=5,
            partial_path=part,
            on_chunk=stop,
            progress=False,
        )
    assert len(part.read_text().splitlines()) == 2
    seen = []
    again = score_file(
        lambda: PackedScorer(model),
        tok,
        T,
        path,
        150,
        chunk_size=5,
        partial_path=part,
        on_chunk=lambda i, r: seen.append(i),
        progress=False,
    )
    assert again == full and seen and 0 not in seen and 1 not in seen
    # another chunking: set aside (never mixed), the result is a clean run's
    other = score_file(lambda: PackedScorer(model), tok, T, path, 150, chunk_size=4, partial_path=part, progress=False)
    assert other == score_file(lambda: PackedScorer(model), tok, T, path, 150, chunk_size=4, progress=False)
    assert part.with_name(part.name + ".stale").exists()


def test_empty_shard_builds_no_scorer(tok, tmp_path):
    rows = _pool(2, seed=4)
    path = _write(tmp_path / "pool.jsonl", rows)
    from grape.score.shards import shard_of

    idle = min(set(range(16)) - {shard_of(r["instruction_id"], 16) for r in rows})

    def never():
        raise AssertionError("a model was loaded for an empty shard")

    assert score_file(never, tok, T, path, 512, chunk_size=4, shard=idle, shards=16, progress=False) == ([], [])


def test_producer_errors_reach_the_caller_and_ahead_zero_is_the_same(model, tok, tmp_path):
    rows = _pool(6, seed=5)
    index = index_rows(rows, 4)
    a = [(ci, g[1]) for ci, g in tokenized_chunks(index, range(len(index.chunks)), tok, T, 512, "skip", ahead=2)]
    b = [(ci, g[1]) for ci, g in tokenized_chunks(index, range(len(index.chunks)), tok, T, 512, "skip", ahead=0)]
    assert a == b and [ci for ci, _ in a] == list(range(len(index.chunks)))
    groups, meta, skipped = tokenize_chunk(tok, T, index.fetch(index.chunks[0]), 512, "skip")
    assert sum(len(g.keys) for g in groups) + len(skipped) == len(index.chunks[0])

    class Broken:
        eos_token_id = None

        def __call__(self, *a, **k):
            raise RuntimeError("tokenizer exploded")

    with pytest.raises(RuntimeError, match="tokenizer exploded"):
        list(tokenized_chunks(index, range(len(index.chunks)), Broken(), T, 512, "skip", ahead=2))
