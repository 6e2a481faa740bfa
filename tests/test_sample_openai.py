"""The `openai` sampling backend against a real local HTTP server that misbehaves: 429 with Retry-After, 500, a hang
past the client's timeout, a dropped connection, and one prompt that always fails. Every request ends answered
(once) or listed as missing, none twice, none lost; the key comes from the environment and is never written."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from grape import config as gconfig
from grape import sample


class Server:
    def __init__(self):
        self.attempts, self.answered, self.lock = Counter(), Counter(), threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][0]["content"]
                i = int(text.split()[2])
                with outer.lock:
                    outer.attempts[i] += 1
                    first = outer.attempts[i] == 1
                if self.headers.get("Authorization") != "Bearer s3cret":
                    return self._send(401, {"error": "bad key"})
                if i == 5:
                    return self._send(503, {"error": "overloaded"})
                if first and i % 6 == 1:
                    return self._send(429, {"error": "slow down"}, {"Retry-After": "0"})
                if first and i % 6 == 2:
                    return self._send(500, {"error": "boom"})
                if first and i % 6 == 3:
                    time.sleep(2.5)  # past the client's 1 s timeout
                    return
                if first and i % 6 == 4:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                with outer.lock:
                    outer.answered[i] += 1
                n = body["n"]
                choices = [
                    {"index": k, "message": {"content": f" It is {i}. "}, "finish_reason": "stop"} for k in range(n)
                ]
                self._send(200, {"choices": choices, "usage": {"prompt_tokens": 9, "completion_tokens": 4 * n}})

            def _send(self, status, obj, headers=()):
                data = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    for k, v in dict(headers).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def test_faults_end_answered_once_or_listed_missing(server, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPE_TEST_KEY", "s3cret")
    cfg = gconfig.compose("tiny", [
        "model@models.tiny_b=endpoint", f"models.tiny_b.endpoint.base_url=http://127.0.0.1:{server.port}/v1",
        "models.tiny_b.endpoint.model=served", "models.tiny_b.endpoint.api_key_env=GRAPE_TEST_KEY",
        "sample.backend=openai", "sample.batch_size=4", "sample.concurrency=4", "sample.timeout_s=1",
        "sample.retries=3", "sample.backoff_s=0.01", "sample.allow_missing=0.2",
    ])  # fmt: skip
    params = gconfig.stage_params(cfg, "sample", source="tiny_b")
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"id": f"q{i:03d}", "instruction": f"What is {i} plus one?",
                                         "responses": [{"response": "x", "source": "original"}]}) + "\n"
                             for i in range(12)))  # fmt: skip
    out, missing = tmp_path / "c.jsonl", tmp_path / "m.jsonl"
    counts = sample.run(params, "unused", str(train), str(out), str(missing))
    cands = [json.loads(x) for x in out.read_text().splitlines()]
    lost = [json.loads(x) for x in missing.read_text().splitlines()]
    got = {(c["instruction_id"], c["sample_index"]) for c in cands}
    listed = {(m["instruction_id"], m["sample_index"]) for m in lost}
    assert len(got) == len(cands) == 22 and listed == {("q005", 0), ("q005", 1)}
    assert got | listed == {(f"q{i:03d}", k) for i in range(12) for k in range(2)} and not got & listed
    assert all(server.answered[i] == 1 for i in range(12) if i != 5) and server.answered[5] == 0  # none twice
    assert server.attempts[5] == 4 and lost[0]["error"].startswith(f"http://127.0.0.1:{server.port}/v1: HTTP 503: ")
    assert {c["response"] for c in cands if c["instruction_id"] == "q007"} == {"It is 7."}
    assert counts["cost"] == {**counts["cost"], "requests": 24, "failures": 2, "prompt_tokens": 9 * 11,
                              "completion_tokens": 8 * 11}  # fmt: skip
    assert "s3cret" not in json.dumps(params) and "s3cret" not in out.read_text() + missing.read_text()


def test_a_missing_key_variable_is_named(server, tmp_path, monkeypatch):
    monkeypatch.delenv("GRAPE_NO_SUCH_KEY", raising=False)
    cfg = gconfig.compose("tiny", [
        "model@models.tiny_b=endpoint", f"models.tiny_b.endpoint.base_url=http://127.0.0.1:{server.port}/v1",
        "models.tiny_b.endpoint.model=served", "models.tiny_b.endpoint.api_key_env=GRAPE_NO_SUCH_KEY",
        "sample.backend=openai",
    ])  # fmt: skip
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"id": "q0", "instruction": "What is 1 plus one?", "responses": ["x"]}) + "\n")
    with pytest.raises(ValueError, match="GRAPE_NO_SUCH_KEY"):
        sample.run(gconfig.stage_params(cfg, "sample", source="tiny_b"), "unused", str(train), str(tmp_path / "c"))


def test_top_k_is_sent_only_when_set():
    """top_k is not in the OpenAI API: vLLM's server takes it, a hosted API may reject it, so 0 sends none."""
    from grape.sample.openai import _body
    from grape.template import Template

    cfg = gconfig.compose("tiny", ["model@models.tiny_b=endpoint", "models.tiny_b.endpoint.base_url=http://127.0.0.1:9/v1",
                               "models.tiny_b.endpoint.model=served", "sample.backend=openai"])  # fmt: skip
    params = gconfig.stage_params(cfg, "sample", source="tiny_b")
    endpoint, template = {**params["endpoint"], "api": "completions"}, Template.from_config(params["template"])
    rows = [{"id": "q0", "instruction": "What is 1 plus one?"}]
    assert params["sample"]["top_k"] == 50 and _body(params, endpoint, template, rows)[1]["top_k"] == 50
    off = {**params, "sample": {**params["sample"], "top_k": 0}}
    assert "top_k" not in _body(off, endpoint, template, rows)[1]
