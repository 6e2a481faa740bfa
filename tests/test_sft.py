"""SFT at paper fidelity on tiny models: the loss mask, padding-free batches that are exact, the global batch for any
process count (a real 2-process `accelerate launch` on CPU), kill-and-resume, the dtype choice, and the paper's three
target families (Llama, Mistral, Qwen2) through scoring, SFT (LoRA and full) and evaluation."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO

from grape import config as gconfig
from grape import evaluate, models, runtime, score, sft
from grape.template import Template

TEMPLATE = {"prompt": "Question: {instruction}\nAnswer:", "response": " {response}", "score_eos": False}
GRAPE = str(Path(sys.executable).parent / "grape")


def _selection(path: Path, n: int = 16) -> Path:
    t = Template.from_config(TEMPLATE)
    with open(path, "w") as fh:
        for i in range(n):
            q, r = f"What is {i} plus {i % 5}?", "The answer is " + " and so on" * (i % 7) + f" {i + i % 5}."
            fh.write(json.dumps({"prompt": t.render_prompt(q), "completion": t.render_response(r), "instruction_id": f"q{i}",
                                 "candidate_id": f"q{i}:a:0", "source": "a", "mean_logprob": -1.0,
                                 "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": r}]}) + "\n")  # fmt: skip
    return path


def _params(**sft_over) -> dict:
    cfg = gconfig.compose("tiny", [])
    p = gconfig.stage_params(cfg, "sft", target="tiny_a", arm="grape")
    p["sft"].update({"global_batch": 4, "batch_size": 2, "max_length": 96, **sft_over})
    p["threads"] = 1
    return p


def test_the_loss_covers_the_response_tokens_and_eos_only(tiny):
    _, tok = tiny
    t = Template.from_config(TEMPLATE)
    rows = [{"prompt": t.render_prompt("What is 2 + 3?"), "completion": t.render_response("The answer is 5.")}]
    ds, stats = sft.build_dataset(tok, t, rows, 96)
    ids, mask = ds[0]["input_ids"], ds[0]["completion_mask"]
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == " The answer is 5." + tok.eos_token
    assert mask == sorted(mask) and stats["response_tokens"] == sum(mask)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_batches_give_the_same_per_example_losses(tiny, attn):
    """A packed micro-batch (one flat sequence, position ids restarting per example, no mask: transformers derives
    the document mask) vs TRL's padded batch: the per-example losses agree, so no example attends to another."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from grape.sft import batches as sft_batches

    model, tok = tiny
    model.set_attn_implementation(attn)
    t = Template.from_config(TEMPLATE)
    rows = [{"prompt": t.render_prompt(f"What is {i} + {i * 3}?"), "completion": t.render_response("Yes. " * i + "4.")}
            for i in range(1, 6)]  # fmt: skip
    ds, _ = sft.build_dataset(tok, t, rows, 96)
    examples = [dict(ds[i]) for i in range(len(ds))]
    for e in examples:  # as TRL prepares them: labels -100 outside the response
        e["labels"] = [t if m else -100 for t, m in zip(e["input_ids"], e.pop("completion_mask"))]

    def losses(padding_free: bool) -> list[float]:
        if padding_free:
            collate = sft_batches.PackedCollator(ds, tok.pad_token_id)
            batch = collate([{"examples": tuple(range(len(ds)))}])
            assert "attention_mask" not in batch and sum(batch.pop(sft_batches.LENGTHS)) == batch["input_ids"].shape[1]
        else:
            batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(examples)
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch, use_cache=False).logits
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="none")
        nll = nll.view(labels.shape[0], -1)
        valid = labels[:, 1:] != -100
        if not padding_free:
            return [float(nll[i][valid[i]].mean()) for i in range(len(examples))]
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [labels.shape[1]]
        out = []
        for a, b in zip(starts, starts[1:]):
            seg, ok = nll[0, a : b - 1], valid[0, a : b - 1]
            out.append(float(seg[ok].mean()))
        return out

    try:
        padded, free = losses(False), losses(True)
    finally:
        model.set_attn_implementation("sdpa")
    assert len(free) == len(padded) == 5
    assert free == pytest.approx(padded, abs=1e-4)


def test_flex_attention_keeps_packed_examples_apart(tiny_model_dir):
    """The GPU default without flash-attn (`attn_implementation: auto` -> flex_attention for padding-free
    micro-batches): transformers turns the position ids into a block mask; its forward on CPU (flex attention has no
    CPU backward) equals sdpa's on the same packed micro-batch, so the mask keeps examples apart there too."""
    from grape import model_folder
    from grape.sft import batches as sft_batches

    tok = model_folder.load_tokenizer(tiny_model_dir)
    t = Template.from_config(TEMPLATE)
    rows = [{"prompt": t.render_prompt(f"What is {i} + {i * 3}?"), "completion": t.render_response("Yes. " * i + "4.")}
            for i in range(1, 5)]  # fmt: skip
    ds, _ = sft.build_dataset(tok, t, rows, 96)
    batch = sft_batches.PackedCollator(ds, tok.pad_token_id)([{"examples": (0, 1, 2, 3)}])
    batch.pop(sft_batches.LENGTHS)
    batch.pop("labels")
    logits = {}
    for attn in ("sdpa", "flex_attention"):
        model = model_folder.load_model(tiny_model_dir, dtype=torch.float32, device="cpu", attn_implementation=attn)
        with torch.no_grad():
            logits[attn] = model(**batch, use_cache=False).logits
    assert torch.allclose(logits["flex_attention"], logits["sdpa"], atol=1e-4)


def test_steps_hold_the_global_batch_in_micro_batches_by_examples_or_tokens():
    """The plan (grape.sft.batches): every epoch shuffled and cut into steps of global_batch examples; each step in
    exactly accum x processes micro-batches, by examples or balanced by tokens, short steps filled with empties."""
    from grape.sft import batches as sft_batches

    lengths = [10 + (i * 37) % 200 for i in range(50)]
    for procs in (1, 2):
        micro, accum, steps = sft_batches.plan(lengths, 16, procs, 2, 0, tokens_per_micro=400)
        per_step = accum * procs
        assert len(steps) == 8 and [len(s) for s in steps] == [16, 16, 16, 2] * 2  # 50 = 3 x 16 + 2, twice
        for e in range(2):  # every example once per epoch, in a seeded order
            assert sorted(i for s in steps[4 * e : 4 * e + 4] for i in s) == list(range(50))
        assert len(micro) == per_step * len(steps)
        for k, s in enumerate(steps):
            parts = micro[k * per_step : (k + 1) * per_step]
            assert sorted(i for m in parts for i in m) == sorted(s)
            assert sum(1 for m in parts if not m) == max(0, per_step - len(s))
        full = [sum(lengths[i] for i in m) for m in micro[:per_step]]
        assert max(full) - min(full) <= max(lengths)  # balanced by tokens
        assert accum == max(-(-sum(lengths[i] for i in s) // (400 * procs)) for s in steps)
    assert steps != sft_batches.plan(lengths, 16, 1, 2, 1, tokens_per_micro=400)[2]  # the seed decides the order
    micro, accum, steps = sft_batches.plan(lengths, 16, 2, 1, 0, examples_per_micro=2)
    assert accum == 4 and all(len(m) == 2 for m in micro[:8])
    assert [sft_batches.accumulation(256, 2, n) for n in (1, 2, 4)] == [128, 64, 32]
    with pytest.raises(ValueError, match=r"global_batch 256 is not a multiple of sft.batch_size 2 x 3 processes"):
        sft_batches.accumulation(256, 2, 3)
    with pytest.raises(ValueError, match="micro_batch_tokens needs sft.padding_free"):
        sft.recipe(_params(padding_free=False, micro_batch_tokens=512)["sft"], "cpu", 1)


def test_the_dtype_attention_and_checkpointing_follow_the_machine(monkeypatch):
    from grape.sft import batches as sft_batches

    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "fma"})
    assert sft.recipe(_params()["sft"], "cpu", 1)["dtype"] == "float32"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "amx_bf16", "amx_tile"})
    plan = sft.recipe(_params()["sft"], "cpu", 1)
    assert plan["dtype"] == "bfloat16" and "amx_bf16" in plan["dtype_reason"]
    assert plan["attn_implementation"] == "sdpa"
    from grape.sft.settings import SFTSettings

    s = _params()["sft"]
    if importlib.util.find_spec("flash_attn") is None:
        assert sft.attention(SFTSettings.from_config(s), "cuda") == "flex_attention"
        assert sft.attention(SFTSettings.from_config({**s, "padding_free": False}), "cuda") == "sdpa"
    # Llama-3.2-3B shape, full FT: 8K-token micro-batches fit an H200 (141 GB) without recomputation, not an H100
    shape, hidden, vocab = (3.2e9, 28, 3072), 3072, 128256
    on, why = sft_batches.checkpointing("auto", "cuda", shape, hidden, vocab, 8192, True, 1, 141 * 2**30)
    assert not on and "<=" in why
    assert sft_batches.checkpointing("auto", "cuda", shape, hidden, vocab, 8192, True, 1, 80 * 2**30)[0]
    assert not sft_batches.checkpointing("auto", "cuda", shape, hidden, vocab, 8192, True, 4, 80 * 2**30)[0]  # fsdp
    assert sft_batches.checkpointing("auto", "cpu", shape, hidden, vocab, 8192, True, 1, None) == (
        False,
        "CPU: recomputation would only cost time",
    )
    assert sft_batches.checkpointing(True, "cpu", shape, hidden, vocab, 8, True, 1, None)[0]


def _run_sft(params, model_dir, selection, out, *launch, wait=True):
    cmd = [*launch, "sft", "--params", json.dumps(params), "--model", str(model_dir), "--selection", str(selection),
           "--output", str(out)] if launch else [GRAPE, "sft", "--params", json.dumps(params), "--model",
                                                 str(model_dir), "--selection", str(selection), "--output", str(out)]  # fmt: skip
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if not wait:
        return proc
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    return json.loads((Path(out) / "train_log.json").read_text())


@pytest.mark.slow
def test_two_processes_through_accelerate_keep_the_global_batch(tiny_model_dir, tmp_path):
    selection = _selection(tmp_path / "sel.jsonl", n=16)
    params = _params(global_batch=8, batch_size=2, method="full", lr=1e-3)
    # the command the sft rule runs for a 2-GPU job (config/accelerate/ddp.yaml); on CPU the processes use gloo
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
              str(REPO / "config" / "accelerate" / "ddp.yaml"), "--num_processes", "2", "-m", "grape"]  # fmt: skip
    two = _run_sft(params, tiny_model_dir, selection, tmp_path / "two", *launch)
    one = _run_sft(params, tiny_model_dir, selection, tmp_path / "one")
    assert two["recipe"]["processes"] == 2 and two["recipe"]["grad_accum"] == 2
    assert one["recipe"]["processes"] == 1 and one["recipe"]["grad_accum"] == 4
    assert two["counts"]["steps"] == one["counts"]["steps"] == 2  # 16 examples / global batch 8
    # micro-batches by tokens: the same steps of examples on 1 and 2 processes, so the same loss at every step
    by_tokens = {**params, "sft": {**params["sft"], "micro_batch_tokens": 120, "dtype": "float32"}}
    two = _run_sft(by_tokens, tiny_model_dir, selection, tmp_path / "two_t", *launch)
    one = _run_sft(by_tokens, tiny_model_dir, selection, tmp_path / "one_t")
    assert two["recipe"]["micro_batches"]["per_step"] == 2 * two["recipe"]["grad_accum"]
    loss = {k: [h["loss"] for h in v["log_history"] if "loss" in h] for k, v in (("one", one), ("two", two))}
    assert len(loss["one"]) == 2 and loss["two"] == pytest.approx(loss["one"], rel=1e-4)
    assert [s["tokens"] for s in two["throughput"]["steps"]] == [s["tokens"] for s in one["throughput"]["steps"]]
    assert (tmp_path / "two" / "model.safetensors").exists() and not (tmp_path / "two.checkpoints").exists()


@pytest.mark.slow  # a real sft job killed and rerun, as a subprocess
def test_a_killed_sft_resumes_to_the_same_end(tiny_model_dir, tmp_path):
    selection = _selection(tmp_path / "sel.jsonl", n=40)
    params = _params(global_batch=2, batch_size=1, method="full", lr=1e-3, save_steps=2)
    whole = _run_sft(params, tiny_model_dir, selection, tmp_path / "whole")
    out = tmp_path / "killed"
    proc = _run_sft(params, tiny_model_dir, selection, out, wait=False)
    ckpts = Path(f"{out}.checkpoints")
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts / "checkpoint-6" / "trainer_state.json").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and (ckpts / "checkpoint-6").exists()
    resumed = _run_sft(params, tiny_model_dir, selection, out)
    assert resumed["counts"]["resumed_from"].startswith("checkpoint-")
    assert resumed["counts"]["steps"] == whole["counts"]["steps"] == 20
    assert resumed["counts"]["last_loss"] == pytest.approx(whole["counts"]["last_loss"], rel=1e-3, abs=1e-4)
    assert not ckpts.exists()  # removed once the model is written


def test_token_budget_micro_batches_train_as_the_padded_path(tiny_model_dir, tmp_path):
    """A whole run, padded batches of 4 examples vs padding-free micro-batches of ~150 tokens (one optimizer step
    of all 12 examples per epoch, 3 epochs, fp32): the same loss at every step, so the split changes speed only.
    train_log.json counts the real tokens of each step (TRL's num_tokens too) and its throughput."""
    selection = _selection(tmp_path / "sel.jsonl", n=12)
    base = {"method": "full", "lr": 1e-3, "epochs": 3, "global_batch": 12, "batch_size": 4, "dtype": "float32"}
    logs = {}
    for name, over in (("padded", {"padding_free": False}), ("tokens", {"micro_batch_tokens": 150})):
        sft.run(_params(**base, **over), str(tiny_model_dir), str(selection), str(tmp_path / name))
        logs[name] = json.loads((tmp_path / name / "train_log.json").read_text())
    padded, tokens = logs["padded"], logs["tokens"]
    assert tokens["recipe"]["micro_batches"]["per_step"] == tokens["recipe"]["grad_accum"] > 1
    assert tokens["recipe"]["micro_batches"]["max_tokens"] <= 150 + 40
    losses = {k: [h["loss"] for h in v["log_history"] if "loss" in h] for k, v in logs.items()}
    assert len(losses["tokens"]) == len(losses["padded"]) == 3
    assert losses["tokens"] == pytest.approx(losses["padded"], rel=1e-4)
    assert losses["tokens"][-1] < losses["tokens"][0]
    per_epoch = tokens["counts"]["tokens"]
    for log in (padded, tokens):
        steps = log["throughput"]["steps"]
        assert [s["tokens"] for s in steps] == [per_epoch] * 3
        assert all(s["tokens_per_s"] > 0 and 0 < s["mfu"] for s in steps)
        assert log["throughput"]["matmul_peak_tflops"] > 0 and log["throughput"]["steady_steps"] == 2
        assert [h["num_tokens"] for h in log["log_history"] if "num_tokens" in h] == [per_epoch * k for k in (1, 2, 3)]
    # sft.report_to tensorboard (the default): event files with the loss of every step, kept in the model folder
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name in ("padded", "tokens"):
        events = EventAccumulator(str(tmp_path / name / "tensorboard")).Reload()
        assert [round(e.value, 4) for e in events.Scalars("train/loss")] == [round(x, 4) for x in losses[name]]
    p = _params(**base, report_to="none")
    sft.run(p, str(tiny_model_dir), str(selection), str(tmp_path / "quiet"))
    assert not (tmp_path / "quiet" / "tensorboard").exists()


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_each_target_family_scores_trains_and_evaluates(arch, tmp_path):
    cfg = gconfig.compose("tiny", [f"models.tiny_a.architecture={arch}"])
    model_dir = tmp_path / "model"
    models.materialise("tiny_a", cfg["models"]["tiny_a"], model_dir)
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == arch
    pool = tmp_path / "pool.jsonl"
    with open(pool, "w") as fh:
        for i in range(4):
            for k in range(2):
                fh.write(json.dumps({"candidate_id": f"q{i}:a:{k}", "instruction_id": f"q{i}", "source": "a",
                                     "instruction": f"What is {i} + {k}?", "response": f"It is {i + k}.",
                                     "sample_index": k, "correct": None}) + "\n")  # fmt: skip
    sp = gconfig.stage_params(cfg, "score", target="tiny_a")
    counts = score.run(sp, str(model_dir), str(pool), str(tmp_path / "s.jsonl"), str(tmp_path / "k.jsonl"))
    assert counts["scored"] == 8
    selection = _selection(tmp_path / "sel.jsonl", n=8)
    for method in ("lora", "full"):
        p = gconfig.stage_params(cfg, "sft", target="tiny_a", arm="grape")
        p["sft"].update({"method": method, "global_batch": 4, "batch_size": 2})
        log = sft.run(p, str(model_dir), str(selection), str(tmp_path / method))
        assert log["steps"] == 2
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"id": f"t{i}", "instruction": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(3)))  # fmt: skip
    ep = gconfig.stage_params(cfg, "evaluate")
    evaluate.write_task(ep, str(test), str(tmp_path / "task" / "task.yaml"))
    result = evaluate.run(ep, str(tmp_path / "full"), str(tmp_path / "task" / "task.yaml"), str(tmp_path / "e.json"))
    assert 0.0 <= result["accuracy"]["local"] <= 1.0


def test_the_accelerate_configs_are_there():
    for name in ("ddp", "fsdp2", "deepspeed_zero3"):
        assert (REPO / "config" / "accelerate" / f"{name}.yaml").exists()
