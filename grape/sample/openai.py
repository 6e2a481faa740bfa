"""`sample.backend: openai`: any OpenAI-compatible server (a `vllm serve`, a hosted 405B), asynchronously.

Per source model, `models.<name>.endpoint` names the server: `base_url` (e.g. `http://node:8000/v1`), `model` (the
served model name), `api` (`chat`: /chat/completions with the instruction as the user message, the server applying
the model's chat template; `completions`: /completions with the plain `Question:/Answer:` prompt), and `api_key_env`,
the *name* of an environment variable holding the key (the key itself never appears in a config file or log).

One request per instruction asks for all `sample.n` samples (`n`), with a seed derived from the experiment seed and
the instruction id, so a rerun asks the same question the same way. At most `sample.concurrency` requests are in
flight over one connection pool; each has a `sample.timeout_s` limit. 429, 5xx, timeouts and dropped connections
are retried up to `sample.retries` times with exponential backoff and full jitter (a `Retry-After` header is
honoured); a request that still fails is reported as failed for each of its samples (the stage lists it in the
missing file and counts it). Usage (prompt and completion tokens) comes from the server's `usage` field.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Iterator, Mapping

from grape.sample.prompts import request_seed
from grape.template import Template

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def _body(params: Mapping, endpoint: Mapping, template: Template, row: Mapping) -> tuple[str, dict]:
    s = params["sample"]
    body = {
        "model": endpoint["model"],
        "n": s["n"],
        "temperature": s["temperature"],
        "top_p": s["top_p"],
        "max_tokens": s["max_new_tokens"],
        "seed": request_seed(params["seed"], row["id"]),
    }
    if s["stop"]:
        body["stop"] = list(s["stop"])[:4]  # the API takes at most 4 stop sequences
    if endpoint.get("api", "chat") == "chat":
        return "chat/completions", {**body, "messages": [{"role": "user", "content": row["instruction"]}]}
    return "completions", {**body, "prompt": template.render_prompt(row["instruction"])}


def _results(row: Mapping, n: int, reply: Mapping | None, error: str | None) -> list[dict]:
    if reply is None:
        return [{"row": row, "k": k, "error": error} for k in range(n)]
    choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
    usage = reply.get("usage") or {}
    completion = int(usage.get("completion_tokens") or 0)
    out = []
    for k in range(n):
        if k >= len(choices):
            out.append({"row": row, "k": k, "error": f"the server returned {len(choices)} of {n} choices"})
            continue
        c = choices[k]
        text = c["message"]["content"] if "message" in c else c.get("text", "")
        out.append(
            {
                "row": row,
                "k": k,
                "text": (text or "").strip(),
                "finish": "length" if c.get("finish_reason") == "length" else "stop",
                "prompt_tokens": int(usage.get("prompt_tokens") or 0) if k == 0 else 0,
                "completion_tokens": completion // n + (completion % n if k == 0 else 0),
            }
        )
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


async def _chunks(params: Mapping, endpoint: Mapping, group: list[tuple[int, list[dict]]]) -> list[tuple[int, list]]:
    import aiohttp

    s = params["sample"]
    template = Template.from_config(params["template"])
    headers = {}
    key_env = endpoint.get("api_key_env")
    if key_env:
        if not os.environ.get(key_env):
            raise ValueError(f"sample backend openai: environment variable {key_env} (endpoint.api_key_env) is not set")
        headers["Authorization"] = f"Bearer {os.environ[key_env]}"
    sem = asyncio.Semaphore(s.get("concurrency", 32))
    timeout = aiohttp.ClientTimeout(total=s.get("timeout_s", 300))
    connector = aiohttp.TCPConnector(limit=s.get("concurrency", 32))
    base = endpoint["base_url"].rstrip("/")
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(row):
            path, body = _body(params, endpoint, template, row)
            reply, error = await _ask(session, sem, f"{base}/{path}", body, headers, s)
            return _results(row, s["n"], reply, error)

        done = await asyncio.gather(*(asyncio.gather(*(one(r) for r in rows)) for _, rows in group))
    return [(c, [r for per_row in per_chunk for r in per_row]) for (c, _), per_chunk in zip(group, done)]


def generate(params: Mapping, model_dir: str, chunks: list[tuple[int, list[dict]]]) -> Iterator[tuple[int, list]]:
    """Chunks in order, each once; a group of chunks holding at least `concurrency` instructions is in flight at a
    time, so the server stays busy while each finished chunk is checkpointed."""
    endpoint = params.get("endpoint")
    if not endpoint or not endpoint.get("base_url") or not endpoint.get("model"):
        raise ValueError(
            f"sample backend openai: models.{params['source']}.endpoint needs base_url and model "
            "(and api_key_env, the name of the variable holding the key, where the server wants one)"
        )
    want = max(1, params["sample"].get("concurrency", 32))
    group, size = [], 0
    for c, rows in chunks:
        group.append((c, rows))
        size += len(rows)
        if size >= want:
            yield from asyncio.run(_chunks(params, endpoint, group))
            group, size = [], 0
    if group:
        yield from asyncio.run(_chunks(params, endpoint, group))
