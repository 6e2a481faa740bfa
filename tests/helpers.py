"""Short forms for tests: the scoring API (one backend under the checkpointed driver, as the stage runs it) and the
real snakemake on this checkout."""

from __future__ import annotations

from pathlib import Path

from grape.score.checkpoint import score_pool
from grape.score.packed import PackedScorer
from grape.score.reference import ReferenceScorer

REPO = Path(__file__).resolve().parents[1]


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


def tiny_llama(tok, attn="sdpa", hidden=64):
    """A small random Llama on the test tokenizer (seeded), fp32, for exactness tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=128,
        max_position_embeddings=1024,
        initializer_range=0.2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        attn_implementation=attn,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(torch.float32).eval()


def snakemake(workdir, *args: str, timeout: int = 1200):
    """The real `snakemake` on this checkout's Snakefile, in `workdir`, with this venv's `grape` first on PATH."""
    import subprocess

    proc = snakemake_started(workdir, *args)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def snakemake_started(workdir, *args: str):
    """`snakemake` as above, started and not waited for (a Popen with text pipes): several side by side."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def run_in_own_group(cmd, env, timeout: int):
    """Run `cmd` in a process group of its own; return (CompletedProcess, what was still alive in the group after
    it exited). vLLM starts engine and worker processes that spin on the CPU: one left behind by a crashed parent
    would slow every later test, so whatever is left is killed, and the caller can assert nothing was."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        left = []
        time.sleep(0.5)  # children that are ending on their own get the chance
        for pid_dir in os.listdir("/proc"):
            if pid_dir.isdigit():
                try:
                    state = open(f"/proc/{pid_dir}/stat").read().rsplit(")", 1)[1].split()[0]
                    if os.getpgid(int(pid_dir)) == proc.pid and state != "Z":  # a zombie has ended
                        left.append(open(f"/proc/{pid_dir}/cmdline").read().replace("\0", " ")[:120])
                except (ProcessLookupError, PermissionError, FileNotFoundError):
                    pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), left


def choose(arm, groups, scores, k, seed, strongest=None, originals=("original",)):
    """One arm over every instruction of `groups` (id -> pool rows), as the select stage runs it: (picked, counts)."""
    from grape.select.choosing import choose_ids

    settings = {"k": k, "strongest_source": strongest, "original_sources": list(originals)}
    picked, counts = choose_ids(arm, sorted(groups), groups, scores, seed, settings)
    return [c for _, c in picked], counts


def shard_rows(rows, shard_index: int, n_shards: int) -> list:
    """The rows of one score shard, by the stage's own assignment (`grape.score.shards.shard_of`)."""
    from grape.score.shards import check_shard, shard_of

    check_shard(shard_index, n_shards)
    return [row for row in rows if shard_of(row["instruction_id"], n_shards) == shard_index]
