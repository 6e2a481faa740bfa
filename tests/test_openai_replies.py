"""The `openai` backend against a local server whose 200 replies are malformed (HTML, invalid UTF-8, `message` or
`text` null, `choices` missing or short, JSON that is not an object) and whose error bodies echo the key: each bad
reply is retried like a 5xx, then listed as missing with an error naming the server, the status and what was wrong;
the run ends without a traceback, and the key is never in an error, the candidates or the missing file."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from grape import config as gconfig
from grape import sample
from grape.sample.openai import Malformed, _check, _redact

KEY = "s3cret-value-42"  # not `sk-...`-shaped: only the replacement of the key's own value hides it
PAD = "x" * 186  # puts the echoed key across the 200-character cut of an error body (`{"key": "` + PAD + key)


def _choices(api: str, count: int, text=" fine ") -> list:
    field = {"message": {"role": "assistant", "content": text}} if api == "chat" else {"text": text}
    return [{"index": i, **field, "finish_reason": "stop"} for i in range(count)]


def _reply(mode: str, api: str, want: int, auth: str, first: bool):
    """(status, body bytes, content type) for one mode."""
    ok = {"choices": _choices(api, want), "usage": {"prompt_tokens": 3, "completion_tokens": 2 * want}}
    bodies = {
        "html": "<html><body><h1>502 Bad Gateway</h1></body></html>",
        "utf8": b'{"choices": [{"message": {"content": "\xff\xfe"}}]}',
        "message_null": {"choices": [{"index": i, "message": None} for i in range(want)]},
        "text_null": {"choices": [{"index": i, "text": None} for i in range(want)]},
        "no_choices": {"object": "error", "message": "the model is loading"},
        "short": {"choices": _choices(api, want - 1)},
        "not_object": [ok],
        "text_number": {"choices": _choices(api, want, text=7)},
        "twice": {"choices": [{**c, "index": 0} for c in _choices(api, want)]},
        "echo401": {"key": PAD + auth.split()[-1], "error": "invalid key", "headers": {"Authorization": auth}},
        "echo500": {"echo": f"Authorization: {auth}", "error": "boom", "key": PAD + auth.split()[-1]},
    }
    if mode == "recovers":
        return (200, b"<html>oops</html>", "text/html") if first else (200, json.dumps(ok).encode(), "application/json")
    status = {"echo401": 401, "echo500": 500}.get(mode, 200)
    body = bodies.get(mode, ok)
    data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return status, data, "text/html" if isinstance(body, str) else "application/json"


class Server:
    """Answers each request by the mode of its first instruction (`modes[i]` for "What is i plus one?")."""

    def __init__(self, modes: list[str]):
        self.attempts, self.lock = Counter(), threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api = "chat" if "messages" in body else "completions"
                prompts = [body["messages"][0]["content"]] if api == "chat" else body["prompt"]
                prompts = [prompts] if isinstance(prompts, str) else prompts
                i = int(re.search(r"What is (\d+)", prompts[0]).group(1))
                with outer.lock:
                    outer.attempts[i] += 1
                    first = outer.attempts[i] == 1
                auth = self.headers.get("Authorization", "")
                status, data, ctype = _reply(modes[i], api, len(prompts) * body["n"], auth, first)
                if modes[i] == "retry_after" and first:  # rate-limited, told to come back in a day
                    status, data = 429, b'{"error": "rate limited"}'
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "86400")
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def _run(
    modes: list[str],
    tmp_path,
    monkeypatch,
    capfd,
    api: str,
    per_request: int = 1,
    allow_missing: float = 1,
    timeout_s: float = 5,
):
    """sample.run against `Server(modes)`: (server, candidates, {instruction: missing rows}, counts or the error);
    the key is in none of the files, the counts, the job's stdout/stderr or the error."""
    monkeypatch.setenv("GRAPE_TEST_KEY", KEY)
    server = Server(modes)
    out, missing = tmp_path / "c.jsonl", tmp_path / "m.jsonl"
    try:
        cfg = gconfig.compose("tiny", [
            "model@models.tiny_b=endpoint", f"models.tiny_b.endpoint.base_url={server.url}",
            "models.tiny_b.endpoint.model=served", "models.tiny_b.endpoint.api_key_env=GRAPE_TEST_KEY",
            f"models.tiny_b.endpoint.api={api}", f"sample.prompts_per_request={per_request}",
            "sample.backend=openai", "sample.batch_size=4", "sample.concurrency=4", f"sample.timeout_s={timeout_s}",
            "sample.retries=2", "sample.backoff_s=0.001", f"sample.allow_missing={allow_missing}",
        ])  # fmt: skip
        params = gconfig.stage_params(cfg, "sample", source="tiny_b")
        train = tmp_path / "train.jsonl"
        train.write_text("".join(json.dumps({"id": f"q{i:03d}", "instruction": f"What is {i} plus one?",
                                             "responses": [{"response": "x", "source": "original"}]}) + "\n"
                                 for i in range(len(modes))))  # fmt: skip
        try:
            counts = sample.run(params, "unused", str(train), str(out), str(missing))
        except ValueError as err:  # more missing than allowed: the stage's own error, not a traceback from the backend
            counts = err
    finally:
        server.httpd.shutdown()
    lost = {}
    for m in map(json.loads, missing.read_text().splitlines()):
        lost.setdefault(int(m["instruction_id"][1:]), []).append(m)
    logged = capfd.readouterr()
    written = out.read_text() if out.exists() else ""
    assert KEY not in written + missing.read_text() + logged.out + logged.err + str(counts)
    return server, [json.loads(x) for x in written.splitlines()], lost, counts


def test_malformed_chat_replies_are_retried_then_listed(tmp_path, monkeypatch, capfd):
    modes = ["ok", "html", "utf8", "message_null", "no_choices", "short", "not_object", "text_number", "twice",
             "recovers", "echo401", "echo500"]  # fmt: skip
    server, cands, lost, counts = _run(modes, tmp_path, monkeypatch, capfd, "chat")
    assert sorted(lost) == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11] and all(len(v) == 2 for v in lost.values())  # n = 2
    assert {c["instruction_id"] for c in cands} == {"q000", "q009"} and {c["response"] for c in cands} == {"fine"}
    assert counts["missing"] == counts["cost"]["failures"] == 20
    whats = {
        1: "the body is not JSON: '<html>",
        2: "the body is not UTF-8",
        3: "choice 0: `message` is NoneType, not an object",
        4: '`choices` is NoneType, not a list: \'{"object": "error", "message": "the model is loading"}\'',
        5: "1 choices, not 2",
        6: "the JSON is list, not an object",
        7: "choice 0: `message.content` is int, not a string",
        8: "choice 1 has index 0",
    }
    for i, what in whats.items():
        assert server.attempts[i] == 3, modes[i]  # 1 try + 2 retries, like a 5xx
        error = lost[i][0]["error"]
        assert error.startswith(f"{server.url}: HTTP 200 with a malformed reply: ") and what in error, error
        assert error.endswith("(after 2 retries)")
    assert server.attempts[9] == 2 and server.attempts[0] == 1  # a bad reply once, then answered
    assert server.attempts[10] == 1 and server.attempts[11] == 3  # 401 is final, 500 is retried
    for i, status, shown in (
        (10, 401, "refused the key (reply body not kept)"),
        (11, 500, '"Authorization: Bearer ***"'),
    ):
        error = lost[i][0]["error"]  # 401: its body is not kept (it may echo the key in any form); 500: the header
        assert error.startswith(f"{server.url}: HTTP {status}: ") and KEY not in error and KEY[:5] not in error
        assert shown in error, error


def test_retry_after_is_honoured_up_to_the_request_timeout(tmp_path, monkeypatch, capfd):
    """A 429 with `Retry-After: 86400` waits sample.timeout_s (1 s here), not a day, then the retry is answered."""
    import time

    t0 = time.monotonic()
    server, cands, lost, counts = _run(["ok", "retry_after"], tmp_path, monkeypatch, capfd, "chat", timeout_s=1)
    assert server.attempts[1] == 2 and not lost and len(cands) == 4 and counts["missing"] == 0
    assert 1.0 <= time.monotonic() - t0 < 30


def test_too_many_echoed_keys_fail_the_job_without_the_key(tmp_path, monkeypatch, capfd):
    """Over sample.allow_missing the stage raises its own error (which may quote a reason): no key in it either."""
    server, cands, lost, err = _run(["ok", "echo401", "echo500", "ok"], tmp_path, monkeypatch, capfd, "chat", 1, 0)
    assert isinstance(err, ValueError) and "4 of 8 requests" in str(err) and not cands
    assert sorted(lost) == [1, 2] and server.attempts[1] == 1 and server.attempts[2] == 3


def test_malformed_completions_replies_are_retried_then_listed(tmp_path, monkeypatch, capfd):
    """Two prompts per request (n = 2: four choices); a request's mode is its first instruction's."""
    modes = ["ok", "ok", "text_null", "", "short", "", "twice", "", "echo500", ""]
    server, cands, lost, _ = _run(modes, tmp_path, monkeypatch, capfd, "completions", per_request=2)
    assert sorted(lost) == [2, 3, 4, 5, 6, 7, 8, 9] and all(len(v) == 2 for v in lost.values())
    assert {c["instruction_id"] for c in cands} == {"q000", "q001"}
    for i, what in ((2, "choice 0: `text` is NoneType, not a string"), (4, "3 choices, not 4 (2 prompts x n=2)"),
                    (6, "choice 1 has index 0"), (8, "HTTP 500: ")):  # fmt: skip
        assert server.attempts[i] == 3
        assert lost[i][0]["error"].startswith(f"{server.url}: ") and what in lost[i][0]["error"]
        assert lost[i + 1][0]["error"] == lost[i][0]["error"]  # the request's other prompt
        assert "(after 2 retries)" in lost[i][0]["error"]


@pytest.mark.parametrize(
    "raw, what",
    [
        (b"", "not JSON"),
        (b"null", "the JSON is NoneType"),
        (b'"text"', "the JSON is str"),
        (b'{"choices": {}}', "`choices` is dict"),
        (b'{"choices": [1]}', "choice 0 is int"),
        (b'{"choices": [{"message": {"content": null}}]}', "`message.content` is NoneType"),
        (b'{"choices": [{"message": "hi"}]}', "`message` is str"),
        (b'{"choices": [{"index": true, "message": {"content": "a"}}]}', "index True"),
        (b'{"choices": [{"index": 1, "message": {"content": "a"}}]}', "index 1"),
        (b'{"choices": [{"message": {"content": "a"}}, {"message": {"content": "b"}}]}', "2 choices, not 1"),
        (b'{"choices": [{"message": {"content": "a"}}], "usage": []}', "`usage`"),
        (b'{"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": "3"}}', "`usage`"),
    ],
)
def test_check_names_what_is_malformed(raw, what):
    with pytest.raises(Malformed, match=re.escape(what)):
        _check(raw, "chat", 1, 1)


def test_check_accepts_a_good_reply_in_any_order():
    raw = json.dumps({"choices": [{"index": 1, "text": " b", "finish_reason": "length"}, {"index": 0, "text": "a"}],
                      "usage": {"prompt_tokens": 5, "completion_tokens": None}})  # fmt: skip
    got = _check(raw.encode(), "completions", 2, 1)
    assert got == {
        "choices": {0: ("a", None), 1: (" b", "length")},
        "usage": {"prompt_tokens": 5, "completion_tokens": 0},
    }
    assert _check(b'{"choices": [{"message": {"content": ""}}]}', "chat", 1, 1)["usage"]["prompt_tokens"] == 0


def test_redact_hides_keys_and_credential_headers():
    text = (
        'key=abc123XYZ {"Authorization": "Bearer tok.en-1"} authorization: bearer zzz '
        "x-api-key: qqq sk-proj-AbCdEf123456 Bearer more"
    )
    out = _redact(text, "abc123XYZ")
    for secret in ("abc123XYZ", "tok.en-1", "zzz", "qqq", "AbCdEf123456", "more"):
        assert secret not in out, out
    assert out.count("***") == 6 and _redact("HTTP 503: overloaded", None) == "HTTP 503: overloaded"


def test_a_key_echoed_escaped_or_truncated_is_redacted():
    from grape.sample.openai import _redact

    key = "Zq9+/xK7p=SECRETVALUE42"
    for text in ("Incorrect API key provided: Zq9+/xK7p=SECR...", "denied for key=Zq9%2B%2FxK7p%3DSECRETVALUE42",
                 '{"key": "Zq9+/xK7p=SECRETVALUE42"}', "tail ...xK7p=SECRETVALUE42"):  # fmt: skip
        out = _redact(text, key)
        assert "***" in out and not any(key[i : i + 8] in out for i in range(len(key) - 7)), out
    assert _redact("HTTP 500: upstream timeout", key) == "HTTP 500: upstream timeout"
