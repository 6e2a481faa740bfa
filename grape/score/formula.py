"""GRAPE's score of one candidate by one plain forward pass: the definition every backend is checked against.

  sum_logprob  = sum over response tokens t of log p(t | prompt, response tokens before t)
  mean_logprob = sum_logprob / n_tokens          (the paper's length normalisation; = -log PPL)
Full logits, log_softmax in fp32 whatever the model dtype, the sum in fp64. docs/scoring.md has the details.
"""

from __future__ import annotations

from typing import Sequence


def reference_logprob_ids(model, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> float:
    """sum log p(response | prompt) by one plain forward pass: full logits, fp32 log_softmax, fp64 sum."""
    import torch

    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=model.device)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt_ids) :, None]).squeeze(1)
    return float(logp.double().sum())
