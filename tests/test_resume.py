"""A checkpoint is valid only for the exact job that wrote it (grape.resume): a job killed and rerun with one
determining input changed (a setting, the model's weights at the same path, an input file) sets the old checkpoint
aside and ends with the file a clean run writes; the same job resumes; a moved model folder is the same model."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO
from test_sample_resume import _sample, _train
from test_sft import _params as _sft_params
from test_sft import _run_sft, _selection

from grape import config as gconfig
from grape import models, resume


def _model(out: Path, seed: int) -> Path:
    cfg = yaml.safe_load((REPO / "config/model/tiny_random.yaml").read_text())
    if out.exists():
        shutil.rmtree(out)
    models.materialise("tiny", {**cfg, "init_seed": seed}, out)
    return out


def test_a_model_is_its_content_not_its_path(tmp_path):
    a = _model(tmp_path / "a", 1)
    moved = tmp_path / "elsewhere" / "a"
    shutil.copytree(a, moved)
    (moved / "grape_meta.json").write_text("{}")  # a run record is not the model
    assert resume.model_digest(a) == resume.model_digest(moved)
    before = resume.model_digest(a)
    _model(a, 2)  # new weights, same shapes, same path
    assert resume.model_digest(a) != before
    ident = resume.model_identity(a)
    assert "model.safetensors" in ident["files"] and "config.json" in ident["files"]


def test_operational_settings_are_not_part_of_a_jobs_identity():
    cfg = gconfig.compose("tiny", [])
    p = gconfig.stage_params(cfg, "sample", source="tiny_a")
    q = json.loads(json.dumps(p))
    q["threads"], q["sample"]["concurrency"], q["sample"]["retries"] = 7, 3, 9
    assert resume.determining(p) == resume.determining(q)
    q["sample"]["temperature"] = 0.1
    assert resume.differences({"params": resume.determining(p)}, {"params": resume.determining(q)}) == [
        f"params.sample.temperature: {p['sample']['temperature']} -> 0.1"
    ]


def _kill_when(proc, ready, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and not ready() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow  # a real job killed and rerun, as a subprocess: end to end
def test_sampling_killed_then_rerun_with_another_temperature_starts_over(tiny_model_dir, tmp_path):
    cfg = gconfig.compose("tiny", ["sample.batch_size=2", "sample.max_new_tokens=24"])
    hot = {**gconfig.stage_params(cfg, "sample", source="tiny_a"), "threads": 1}
    cold = json.loads(json.dumps(hot))
    cold["sample"]["temperature"] = 0.2
    train = _train(tmp_path / "train.jsonl", 16)  # 8 chunks
    clean = _sample(cold, tiny_model_dir, train, tmp_path / "clean.jsonl")
    out = tmp_path / "out.jsonl"
    proc = _sample(hot, tiny_model_dir, train, out, wait=False)
    done = Path(f"{out}.partial.done")
    _kill_when(proc, lambda: done.exists() and len(done.read_text().splitlines()) >= 2)
    assert len(done.read_text().splitlines()) >= 2 and not out.exists()
    again = _sample(cold, tiny_model_dir, train, out)
    assert again["chunks_resumed"] == 0 and again["chunks_requested"] == clean["chunks_requested"] == 8
    assert "params.sample.temperature: 0.8 -> 0.2" in again["checkpoint_set_aside"]
    assert out.read_bytes() == (tmp_path / "clean.jsonl").read_bytes()
    assert Path(f"{out}.partial.stale").exists() and not Path(f"{out}.partial").exists()
    assert not Path(f"{out}.partial.job.json").exists()  # cleared with the checkpoint once the output is written


def _pool(path: Path, n: int) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            for k in range(3):
                fh.write(json.dumps({"candidate_id": f"q{i:03d}:s:{k}", "instruction_id": f"q{i:03d}", "source": "s",
                                     "instruction": f"What is {i} + {k}?", "response": f"It is {i + k}." * (k + 1),
                                     "sample_index": k, "correct": None}) + "\n")  # fmt: skip
    return path


def test_scoring_killed_then_rerun_with_new_weights_at_the_same_path_starts_over(tmp_path, monkeypatch):
    from grape import score
    from grape.io import read_jsonl
    from grape.score import checkpoint

    cfg = gconfig.compose("tiny", ["score.chunk_size=6"])
    params = {**gconfig.stage_params(cfg, "score", target="tiny_a"), "threads": 1}
    pool = _pool(tmp_path / "pool.jsonl", 8)  # 24 candidates, 4 chunks
    model = _model(tmp_path / "models" / "t", 1)
    out, skipped = tmp_path / "s.jsonl", tmp_path / "k.jsonl"
    real_append, calls = checkpoint._append, []

    def append_then_die(path, record):  # the job is killed right after its second chunk is durable
        real_append(path, record)
        calls.append(record["chunk"])
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        score.run(params, str(model), str(pool), str(out), str(skipped))
    monkeypatch.setattr(checkpoint, "_append", real_append)
    assert len(Path(f"{out}.partial").read_text().splitlines()) == 2
    same = tmp_path / "same"
    shutil.copytree(tmp_path / "models", same)  # the old model, moved: it resumes (content, not path)
    _model(model, 2)  # re-converted: new weights at the same path
    counts = score.run(params, str(model), str(pool), str(out), str(skipped))
    assert "models.model: content changed" in counts["checkpoint_set_aside"]
    clean_out = tmp_path / "clean.jsonl"
    score.run(params, str(model), str(pool), str(clean_out), str(tmp_path / "ck.jsonl"))
    assert read_jsonl(out) == read_jsonl(clean_out)
    # the same job resumes: kill again, rerun unchanged from the moved copy of the same weights
    calls.clear()
    monkeypatch.setattr(checkpoint, "_append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        score.run(params, str(model), str(pool), str(tmp_path / "r.jsonl"), str(skipped))
    monkeypatch.setattr(checkpoint, "_append", real_append)
    moved = tmp_path / "moved"
    shutil.copytree(model, moved)
    resumed = score.run(params, str(moved), str(pool), str(tmp_path / "r.jsonl"), str(skipped))
    assert resumed["checkpoint_set_aside"] is None
    assert read_jsonl(tmp_path / "r.jsonl") == read_jsonl(clean_out)


@pytest.mark.slow  # a real job killed and rerun, as a subprocess: end to end
def test_sft_killed_then_rerun_on_another_selection_starts_over(tiny_model_dir, tmp_path):
    params = _sft_params(global_batch=2, batch_size=1, method="full", lr=1e-3, save_steps=1)
    first, second = _selection(tmp_path / "a.jsonl", n=12), _selection(tmp_path / "b.jsonl", n=8)
    clean = _run_sft(params, tiny_model_dir, second, tmp_path / "clean")
    out = tmp_path / "killed"
    sel = tmp_path / "sel.jsonl"
    shutil.copy(first, sel)
    proc = _run_sft(params, tiny_model_dir, sel, out, wait=False)
    ckpts = Path(f"{out}.checkpoints")
    _kill_when(proc, lambda: (ckpts / "checkpoint-2" / "trainer_state.json").exists())
    assert (ckpts / "checkpoint-2").exists() and not out.exists()
    shutil.copy(second, sel)  # the selection file changed (same path): its checkpoints are not this job's
    again = _run_sft(params, tiny_model_dir, sel, out)
    assert again["counts"]["resumed_from"] is None
    assert "inputs.selection: content changed" in again["counts"]["checkpoint_set_aside"]
    assert again["counts"]["steps"] == clean["counts"]["steps"] == 4
    assert again["counts"]["last_loss"] == pytest.approx(clean["counts"]["last_loss"], rel=1e-4, abs=1e-5)
