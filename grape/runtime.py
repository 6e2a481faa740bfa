"""Device, dtype, threads and offline settings, chosen in one place.

On these CPUs bf16 runs ~500x slower than fp32 (no AVX-512-BF16/AMX), so the dtype follows the
device: bf16 only on a GPU. Hubs are unreachable here and in CI, so hub access is off unless the
user turns it back on explicitly.
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


def set_offline() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


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


def dtype_for(dev: str | None = None):
    import torch

    return torch.bfloat16 if (dev or device()) == "cuda" else torch.float32


def dtype_name(dev: str | None = None) -> str:
    return "bfloat16" if (dev or device()) == "cuda" else "float32"
