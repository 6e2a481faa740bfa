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
with the pool. Each request has a `sample.timeout_s` limit. 429, 5xx, timeouts, dropped connections and malformed 200
replies (not JSON, not UTF-8, not an object, `choices` missing or not one per prompt x sample, a choice without its
text as a string: `_check`) are retried up to `sample.retries` times with exponential backoff and full jitter (a
`Retry-After` header is honoured, up to `sample.timeout_s`); a request that still fails is reported as failed for each of its samples (the
stage lists it in the missing file and counts it), its error naming the server, the status and what went wrong.
Every error is redacted (`_redact`): the key's value, `Authorization`/`Bearer` values and `sk-...` tokens a server
echoes become `***`. Usage (prompt and completion tokens) comes from the server's `usage` field.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import random
import re
from typing import Iterator, Mapping
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

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


class Malformed(ValueError):
    """A 200 reply the backend cannot use; retried like a 5xx."""


# what a server may echo that is (or looks like) a credential: header values, bearer tokens, OpenAI-style keys
_SECRETS = [
    (
        re.compile(r"(?i)(authorization|api[-_]?key|x-api-key)([\"']?\s*[:=]\s*[\"']?)(bearer\s+)?[^\s\"',;}]+"),
        r"\1\2\3***",
    ),
    (re.compile(r"(?i)\bbearer\s+[^\s\"',;}]+"), "Bearer ***"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "sk-***"),
]


def _redact(text: str, key: str | None) -> str:
    """`text` without the key's value (as it is, URL- or JSON-escaped, or any 8 characters of it in a row: servers
    echo keys truncated), credential-looking header values or `sk-...` tokens."""
    if key:
        for form in {key, quote(key, safe=""), quote_plus(key), json.dumps(key)[1:-1]}:
            text = text.replace(form, "***")
        if len(key) >= 12:  # any run of 8+ characters of it (a truncated echo), masked whole
            windows = {key[i : i + 8] for i in range(len(key) - 7)}
            hit = [False] * len(text)
            for j in range(len(text) - 7):
                if text[j : j + 8] in windows:
                    hit[j : j + 8] = [True] * 8
            text = re.sub(r"\x00+", "***", "".join("\x00" if h else ch for ch, h in zip(text, hit)))
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def _server(base_url: str) -> str:
    """The base URL as an error may show it: without a user or password in it."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _snippet(raw: bytes, key: str | None, limit: int = 120) -> str:
    """The start of a body, redacted before it is cut (a key cut in two would escape the redaction)."""
    text = _redact(raw.decode("utf-8", errors="replace").strip(), key)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _text(choice: dict, api: str):
    if api == "chat":
        message = choice.get("message")
        if not isinstance(message, dict):
            return None, f"`message` is {type(message).__name__}, not an object"
        if not isinstance(message.get("content"), str):
            return None, f"`message.content` is {type(message.get('content')).__name__}, not a string"
        return message["content"], None
    if not isinstance(choice.get("text"), str):
        return None, f"`text` is {type(choice.get('text')).__name__}, not a string"
    return choice["text"], None


def _check(raw: bytes, api: str, prompts: int, n: int) -> dict:
    """The reply as `{"choices": {index: (text, finish)}, "usage": {...}}`, or `Malformed` saying what is wrong."""
    try:
        reply = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise Malformed(f"the body is not UTF-8 ({err.reason} at byte {err.start})") from None
    except ValueError:
        raise Malformed("the body is not JSON") from None
    if not isinstance(reply, dict):
        raise Malformed(f"the JSON is {type(reply).__name__}, not an object")
    choices = reply.get("choices")
    if not isinstance(choices, list):
        raise Malformed(f"`choices` is {type(choices).__name__}, not a list")
    if len(choices) != prompts * n:
        raise Malformed(f"{len(choices)} choices, not {prompts * n} ({prompts} prompts x n={n})")
    out = {}
    for i, c in enumerate(choices):
        if not isinstance(c, dict):
            raise Malformed(f"choice {i} is {type(c).__name__}, not an object")
        index = c.get("index", i)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < prompts * n or index in out:
            raise Malformed(f"choice {i} has index {index!r} (each of 0..{prompts * n - 1} once)")
        text, what = _text(c, api)
        if what:
            raise Malformed(f"choice {i}: {what}")
        out[index] = (text, c.get("finish_reason"))
    usage = reply.get("usage")
    usage = {} if usage is None else usage
    tokens = [usage.get(k) or 0 for k in ("prompt_tokens", "completion_tokens")] if isinstance(usage, dict) else None
    if tokens is None or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens):
        raise Malformed("`usage` is not an object of non-negative token counts")
    return {"choices": out, "usage": dict(zip(("prompt_tokens", "completion_tokens"), tokens))}


def _results(rows: list[Mapping], n: int, reply: Mapping | None, error: str | None) -> list[dict]:
    """One result per row x sample, from a `_check`ed reply. The server numbers choices prompt-major (index =
    prompt * n + sample); the request's usage is booked on its first result (the stage only sums it)."""
    if reply is None:
        return [{"row": row, "k": k, "error": error} for row in rows for k in range(n)]
    out = []
    for p, row in enumerate(rows):
        for k in range(n):
            text, finish = reply["choices"][p * n + k]
            first = not out
            out.append(
                {
                    "row": row,
                    "k": k,
                    "text": text.strip(),
                    "finish": "length" if finish == "length" else "stop",
                    "prompt_tokens": reply["usage"]["prompt_tokens"] if first else 0,
                    "completion_tokens": reply["usage"]["completion_tokens"] if first else 0,
                }
            )
    return out


async def _ask(session, sem, url: str, body: dict, headers: dict, s: Mapping, check, where: str, key: str | None):
    """`(checked reply, None)` or `(None, error)`: the error names the server (`where`) and is redacted."""
    import aiohttp

    error, retries = None, s["retries"]
    for attempt in range(retries + 1):
        wait = None
        async with sem:
            try:
                async with session.post(url, json=body, headers=headers) as resp:
                    raw = await resp.read()
                    if resp.status == 200:
                        try:
                            return check(raw), None
                        except Malformed as err:
                            error = f"HTTP 200 with a malformed reply: {err}: {_snippet(raw, key)}"
                    elif resp.status in (401, 403):  # a refused credential: a body may echo it in any form
                        error = f"HTTP {resp.status}: the server refused the key (reply body not kept)"
                        return None, f"{where}: {error}"
                    else:
                        error = f"HTTP {resp.status}: {_snippet(raw, key, 200)}"
                        if resp.status not in RETRY_STATUS:
                            return None, _redact(f"{where}: {error}", key)
                        after = resp.headers.get("Retry-After")
                        wait = float(after) if after and after.replace(".", "", 1).isdigit() else None
                        if wait is not None:  # a server's "come back tomorrow" must not stall the job for a day
                            wait = min(wait, s["timeout_s"])
            except (asyncio.TimeoutError, aiohttp.ClientError) as err:
                error = _redact(f"{type(err).__name__}: {err}", key)[:200]
        if attempt < retries:
            await asyncio.sleep(wait if wait is not None else random.uniform(0, s["backoff_s"] * 2**attempt))
    return None, _redact(f"{where}: {error} (after {retries} retries)", key)


def _key(endpoint: Mapping) -> str | None:
    key_env = endpoint.get("api_key_env")
    if not key_env:
        return None
    if not os.environ.get(key_env):
        raise ValueError(f"sample backend openai: environment variable {key_env} (endpoint.api_key_env) is not set")
    return os.environ[key_env]


def generate(params: Mapping, model_dir: str, chunks: list[tuple[int, list[dict]]]) -> Iterator[tuple[int, list]]:
    """Chunks in order, each once, from a sliding window of requests (module docstring)."""
    endpoint = params.get("endpoint")
    if not endpoint or not endpoint.get("base_url") or not endpoint.get("model"):
        raise ValueError(
            f"sample backend openai: models.{params['source']}.endpoint needs base_url and model "
            "(and api_key_env, the name of the variable holding the key, where the server wants one)"
        )
    s = params["sample"]
    key = _key(endpoint)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    api = endpoint.get("api", "chat")
    per_request = 1 if api == "chat" else max(1, s["prompts_per_request"])
    concurrency = max(1, s["concurrency"])
    # chunks the window may run ahead of the oldest one not yet handed back: enough to keep `concurrency` requests
    # in flight, plus one so a slow chunk does not stall the next
    ahead = math.ceil(concurrency * per_request / max(1, s["batch_size"])) + 1
    template = Template.from_config(params["template"])
    url = endpoint["base_url"].rstrip("/")
    where = _redact(_server(url), key)
    loop = asyncio.new_event_loop()
    state: dict = {}

    async def start():
        import aiohttp

        state["sem"] = asyncio.Semaphore(concurrency)
        state["window"] = asyncio.Semaphore(ahead)
        state["queue"] = asyncio.Queue()
        state["session"] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=s["timeout_s"]),
            connector=aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60),
        )

    async def one(rows):
        path, body = _body(params, endpoint, template, rows)
        check = functools.partial(_check, api=api, prompts=len(rows), n=s["n"])
        reply, error = await _ask(state["session"], state["sem"], f"{url}/{path}", body, headers, s, check, where, key)
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
