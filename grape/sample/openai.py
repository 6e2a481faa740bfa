"""`sample.backend: openai`: any OpenAI-compatible server (a `vllm serve`, a hosted 405B), asynchronously.

Per source model, `models.<name>.endpoint` names the server: `base_url` (e.g. `http://node:8000/v1`), `model` (the
served model name), `api` (`chat`: /chat/completions with the instruction as the user message, the server applying
the model's chat template; `completions`: /completions with the plain `Question:/Answer:` prompt), and `api_key_env`,
the *name* of an environment variable holding the key (the key itself never appears in a config file or log).

A request asks for all `sample.n` samples (`n`) of its instructions, with a seed derived from the experiment seed and
the request's first instruction id, so a rerun asks the same question the same way. With the completions API a request
carries `sample.prompts_per_request` consecutive instructions of one chunk (the OpenAI `prompt` list): fewer, larger
requests are what lets an HTTP client keep a server as busy as its offline engine (bench/sample.py). The groups are
cut from the chunk's start, a fixed cut for a given `batch_size`, so a resumed or repeated run sends the same
requests; with 1 (the default) every instruction has its own seed whatever the batching.

Requests stream through one connection pool in a sliding window: at most `sample.concurrency` in flight, new ones
sent as old ones finish (no wave boundaries at chunk ends), while finished chunks are handed back in order to be
checkpointed; the window runs a bounded number of chunks ahead of the oldest unfinished one, so memory does not grow
with the pool. Each request has a `sample.timeout_s` limit. 429, 5xx, timeouts and dropped connections are retried up
to `sample.retries` times with exponential backoff and full jitter (a `Retry-After` header is honoured); a request
that still fails is reported as failed for each of its samples (the stage lists it in the missing file and counts it).
Usage (prompt and completion tokens) comes from the server's `usage` field.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
from typing import Iterator, Mapping

from grape.sample.prompts import request_seed
from grape.template import Template

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def _body(params: Mapping, endpoint: Mapping, template: Template, rows: list[Mapping]) -> tuple[str, dict]:
    s = params["sample"]
    body = {
        "model": endpoint["model"],
        "n": s["n"],
        "temperature": s["temperature"],
        "top_p": s["top_p"],
        "max_tokens": s["max_new_tokens"],
        "seed": request_seed(params["seed"], rows[0]["id"]),
    }
    if s["top_k"]:
        body["top_k"] = s["top_k"]  # not in the OpenAI API: vLLM's server (and many providers) take it
    if s["stop"]:
        body["stop"] = list(s["stop"])[:4]  # the API takes at most 4 stop sequences
    if endpoint.get("api", "chat") == "chat":
        (row,) = rows
        return "chat/completions", {**body, "messages": [{"role": "user", "content": row["instruction"]}]}
    prompts = [template.render_prompt(r["instruction"]) for r in rows]
    return "completions", {**body, "prompt": prompts if len(prompts) > 1 else prompts[0]}


def _results(rows: list[Mapping], n: int, reply: Mapping | None, error: str | None) -> list[dict]:
    """One result per row x sample. The server numbers choices prompt-major (index = prompt * n + sample); the
    request's usage is booked on its first result (the stage only sums it)."""
    if reply is None:
        return [{"row": row, "k": k, "error": error} for row in rows for k in range(n)]
    choices = {int(c.get("index", i)): c for i, c in enumerate(reply.get("choices") or [])}
    usage = reply.get("usage") or {}
    booked = False
    out = []
    for p, row in enumerate(rows):
        for k in range(n):
            c = choices.get(p * n + k)
            if c is None:
                out.append(
                    {"row": row, "k": k, "error": f"the server returned {len(choices)} of {len(rows) * n} choices"}
                )
                continue
            text = c["message"]["content"] if "message" in c else c.get("text", "")
            out.append(
                {
                    "row": row,
                    "k": k,
                    "text": (text or "").strip(),
                    "finish": "length" if c.get("finish_reason") == "length" else "stop",
                    "prompt_tokens": 0 if booked else int(usage.get("prompt_tokens") or 0),
                    "completion_tokens": 0 if booked else int(usage.get("completion_tokens") or 0),
                }
            )
            booked = True
    return out


async def _ask(session, sem, url: str, body: dict, headers: dict, s: Mapping) -> tuple[dict | None, str | None]:
    import aiohttp

    error = None
    for attempt in range(s.get("retries", 5) + 1):
        wait = None
        async with sem:
            try:
                async with session.post(url, json=body, headers=headers) as resp:
                    if resp.status == 200:
                        return await resp.json(), None
                    error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                    if resp.status not in RETRY_STATUS:
                        return None, error
                    after = resp.headers.get("Retry-After")
                    wait = float(after) if after and after.replace(".", "", 1).isdigit() else None
            except (asyncio.TimeoutError, aiohttp.ClientError) as err:
                error = f"{type(err).__name__}: {err}"[:200]
        if attempt < s.get("retries", 5):
            await asyncio.sleep(wait if wait is not None else random.uniform(0, s.get("backoff_s", 1.0) * 2**attempt))
    return None, f"{error} (after {s.get('retries', 5)} retries)"


def _headers(endpoint: Mapping) -> dict:
    key_env = endpoint.get("api_key_env")
    if not key_env:
        return {}
    if not os.environ.get(key_env):
        raise ValueError(f"sample backend openai: environment variable {key_env} (endpoint.api_key_env) is not set")
    return {"Authorization": f"Bearer {os.environ[key_env]}"}


def generate(params: Mapping, model_dir: str, chunks: list[tuple[int, list[dict]]]) -> Iterator[tuple[int, list]]:
    """Chunks in order, each once, from a sliding window of requests (module docstring)."""
    endpoint = params.get("endpoint")
    if not endpoint or not endpoint.get("base_url") or not endpoint.get("model"):
        raise ValueError(
            f"sample backend openai: models.{params['source']}.endpoint needs base_url and model "
            "(and api_key_env, the name of the variable holding the key, where the server wants one)"
        )
    s = params["sample"]
    headers = _headers(endpoint)
    per_request = 1 if endpoint.get("api", "chat") == "chat" else max(1, s.get("prompts_per_request", 1))
    concurrency = max(1, s.get("concurrency", 32))
    # chunks the window may run ahead of the oldest one not yet handed back: enough to keep `concurrency` requests
    # in flight, plus one so a slow chunk does not stall the next
    ahead = math.ceil(concurrency * per_request / max(1, s["batch_size"])) + 1
    template = Template.from_config(params["template"])
    url = endpoint["base_url"].rstrip("/")
    loop = asyncio.new_event_loop()
    state: dict = {}

    async def start():
        import aiohttp

        state["sem"] = asyncio.Semaphore(concurrency)
        state["window"] = asyncio.Semaphore(ahead)
        state["queue"] = asyncio.Queue()
        state["session"] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=s.get("timeout_s", 300)),
            connector=aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60),
        )

    async def one(rows):
        path, body = _body(params, endpoint, template, rows)
        reply, error = await _ask(state["session"], state["sem"], f"{url}/{path}", body, headers, s)
        return _results(rows, s["n"], reply, error)

    async def feed():
        for c, rows in chunks:
            await state["window"].acquire()
            groups = [rows[i : i + per_request] for i in range(0, len(rows), per_request)]
            tasks = [asyncio.ensure_future(one(g)) for g in groups]
            await state["queue"].put((c, asyncio.gather(*tasks)))
            await asyncio.sleep(0)  # let the new requests start before the next chunk is cut

    async def next_chunk(feeder):
        get = asyncio.ensure_future(state["queue"].get())
        await asyncio.wait({get, feeder}, return_when=asyncio.FIRST_COMPLETED)
        if not get.done() and feeder.exception() is not None:
            get.cancel()
            feeder.result()  # the feeder's error (e.g. a template that fails) instead of a wait forever
        return await get

    try:
        loop.run_until_complete(start())
        feeder = loop.create_task(feed())
        for _ in chunks:
            c, done = loop.run_until_complete(next_chunk(feeder))
            per_group = loop.run_until_complete(done)
            state["window"].release()
            yield c, [r for group in per_group for r in group]
        loop.run_until_complete(feeder)
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        if "session" in state:
            loop.run_until_complete(state["session"].close())
        loop.close()
