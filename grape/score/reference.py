"""`score.backend: reference`: one plain forward pass per candidate (`grape.score.formula`).

Obviously correct and slow: the yardstick the packed engine and vLLM are tested against.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from grape.score.formula import reference_logprob_ids
from grape.score.tokens import Group

CONTEXT_RESERVE = 0  # positions kept free below the model's context


class ReferenceScorer:
    name = "reference"

    def __init__(self, model, model_id: str | None = None):
        self.model, self.model_id = model, model_id

    def fingerprint(self) -> dict:
        return {"model": self.model_id, "dtype": str(self.model.dtype), "device": self.model.device.type}

    def score(self, groups: Sequence[Group], pbar=None) -> list[tuple]:
        out = []
        for g in groups:
            for key, r in zip(g.keys, g.responses):
                out.append((key, reference_logprob_ids(self.model, g.prompt, r), len(r)))
                if pbar is not None:
                    pbar.update(1)
        return out


def load(model_dir: str, options: Mapping, max_length: int, seed: int) -> ReferenceScorer:
    import torch

    from grape import model_folder, resume

    model = model_folder.load_model(model_dir, dtype=getattr(torch, options.get("dtype") or "float32"))
    return ReferenceScorer(model, resume.model_digest(model_dir))  # what the model is, not where
