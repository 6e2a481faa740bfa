"""Device, dtype, threads and offline settings, chosen in one place.

The machines we run on differ: on a CPU with AMX (`amx_bf16`) a bf16 matmul ran 8x faster than fp32, on one with
only AVX2 ~500x slower. So the dtype is detected, never assumed: `choose_dtype("auto")` takes bf16 on a GPU that
supports it and on a CPU with AMX-BF16 or AVX512-BF16 instructions, fp32 elsewhere, and says why. Hubs are
unreachable here and in CI, so hub access is off unless the user turns it back on explicitly; the exception is
`grape pick` (a practitioner's command, no prefetch step): it leaves hub access to the user's environment
(`set_offline(hub=False)`), downloading unless HF_HUB_OFFLINE=1 is set there.
"""

from __future__ import annotations

import os
import random

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_NO_USAGE_STATS": "1",
}


HUB_KEYS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")  # what turns hub access off


def set_offline(hub: bool = True) -> None:
    """`OFFLINE_ENV` where the environment does not say otherwise; `hub=False`: all but the hub switches
    (`HUB_KEYS`), leaving downloads to the user's environment (`grape pick`)."""
    for key, value in OFFLINE_ENV.items():
        if hub or key not in HUB_KEYS:
            os.environ.setdefault(key, value)


def hub_offline() -> bool:
    """Whether this process may not download from the hub: HF_HUB_OFFLINE read as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def setup(threads: int | None = None, seed: int | None = None) -> None:
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    if seed is not None:
        seed_everything(seed)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 matmuls


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_summary() -> str:
    """One line for benchmark tables: model name, cores, and the flags that decide dtype speed."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    flags = cpu_flags()
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name or 'unknown CPU'}, {os.cpu_count()} cores, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"


def choose_dtype(requested: str = "auto", dev: str | None = None) -> tuple[str, str]:
    """(dtype name, why) for `requested` in auto | float32 | bfloat16 on device `dev`."""
    dev = dev or device()
    if requested in ("float32", "bfloat16"):
        return requested, "asked for in the config"
    if requested != "auto":
        raise ValueError(f"dtype must be auto, float32 or bfloat16, got {requested!r}")
    if dev == "cuda":
        import torch

        if torch.cuda.is_bf16_supported():
            return "bfloat16", "GPU with bf16 support"
        return "float32", "GPU without bf16 support"
    fast = sorted(set(FAST_BF16_CPU_FLAGS) & cpu_flags())
    if fast:
        return "bfloat16", f"CPU has {', '.join(fast)} (native bf16 matmuls)"
    return "float32", "CPU has no AMX-BF16/AVX512-BF16: bf16 would be emulated, far slower than fp32"


def dtype_name(dev: str | None = None) -> str:
    """The dtype every model stage loads in by default (sampling, evaluation; scoring and SFT through their
    `dtype: auto`): `choose_dtype("auto")`, the one rule."""
    return choose_dtype("auto", dev)[0]


def dtype_for(dev: str | None = None):
    import torch

    return getattr(torch, dtype_name(dev))


def gpus_of_this_job() -> int:
    """Tensor parallel size for vLLM: every GPU the job was given (Slurm's --gpus sets CUDA_VISIBLE_DEVICES); 1 on
    CPU."""
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except Exception:  # no CUDA build
        return 1


def matmul_peak(dev: str, dtype, n: int | None = None, rounds: int = 3) -> float:
    """Best FLOP/s of a square matmul in `dtype` on `dev` (n = 8192 on CUDA, 1024 on CPU: ~0.1 s there), measured
    now, in this process: the peak SFT's MFU and the benches' FLOP/s columns are divided by, so a figure and its
    peak come from the same machine in the same state."""
    import time

    import torch

    n = n or (8192 if dev == "cuda" else 1024)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    reps = 20 if dev == "cuda" else 3

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    a @ b  # first call: kernel choice, allocation
    best = 0.0
    for _ in range(rounds):
        sync()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best
