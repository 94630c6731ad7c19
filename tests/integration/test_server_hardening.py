"""The server tried as an attacker and a careless client would: foreign origins and rebinding hosts are
refused before anything runs, the API key does not break cancel-on-disconnect, copies never destroy
weights, bodies are bounded while they stream in, and every client mistake is a 4xx in the route's
error envelope. Real models, real servers on 127.0.0.1, real clients (requests, curl, ollama)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import ollama
import pytest
import requests

from ollama_magic import Engine
from ollama_magic.engine.scheduler import LoadedStats
from ollama_magic.server import BackgroundServer
from ollama_magic.store.blobs import BlobWriter

from .conftest import engine_and_url_fixtures

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"
MINILM = "all-minilm"


engine, url = engine_and_url_fixtures("hardening")


def post(url: str, path: str, body: str | dict, **headers: str) -> requests.Response:
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(url + path, data=data.encode(), headers=headers, timeout=120)


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=120)


# ---- Origin and Host ------------------------------------------------------------------------------


def test_a_foreign_page_cannot_copy_over_a_model(tmp_path: Path, clone_registered) -> None:
    """The issue's attack: a text/plain "simple" POST from any page, which once deleted gemma3's weights."""
    store = clone_registered(tmp_path / "models")
    weights = store.find(GEMMA).model_path
    with Engine(store) as engine, BackgroundServer(engine, port=0) as server:
        attack = curl("-X", "POST", "-H", "Origin: http://evil.example", "-H", "Content-Type: text/plain",
                      "--data", '{"source":"all-minilm","destination":"gemma3:270m"}', "-w", "%{http_code}",
                      "-o", "/dev/null", server.url + "/api/copy")
        assert attack.stdout == "403"
        preflight = requests.options(server.url + "/api/copy", timeout=10, headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
        assert "not allowed" in preflight.json()["error"]
        assert store.find(GEMMA).details.family == "gemma3" and weights.is_file()
        # the same request from a local page is carried out, with CORS headers
        local = post(server.url, "/api/copy", {"source": GEMMA, "destination": "mine"}, Origin="http://localhost:8888")
        assert local.status_code == 200 and local.headers["access-control-allow-origin"] == "http://localhost:8888"


def test_openai_routes_refuse_foreign_origins_in_openais_envelope(url: str) -> None:
    resp = post(url, "/v1/chat/completions", {"model": GEMMA, "messages": [{"role": "user", "content": "hi"}]},
                Origin="https://evil.example")
    assert resp.status_code == 403 and resp.json()["error"]["type"] == "permission_error"


def test_ollama_origins_extends_the_allow_list(engine: Engine) -> None:
    with BackgroundServer(engine, port=0, origins="https://notebooks.example.org") as server:
        for origin in ("https://notebooks.example.org", "http://127.0.0.1:3000", "vscode-webview://abc"):
            resp = requests.get(server.url + "/api/tags", headers={"Origin": origin}, timeout=10)
            assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == origin
        assert requests.get(server.url + "/api/tags", headers={"Origin": "https://other.example.org"},
                            timeout=10).status_code == 403


def test_dns_rebinding_hosts_are_refused_when_bound_to_loopback(url: str) -> None:
    port = url.rsplit(":", 1)[1]
    rebound = requests.get(url + "/api/tags", headers={"Host": "evil.example"}, timeout=10)
    assert rebound.status_code == 403 and "models" not in rebound.json()
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"app.localhost:{port}", socket.gethostname()):
        assert requests.get(url + "/api/tags", headers={"Host": host}, timeout=10).status_code == 200, host


# ---- the API key, as pure ASGI ---------------------------------------------------------------------


@pytest.mark.parametrize("api_key", [None, "s3cret"])
def test_a_client_that_disconnects_cancels_its_generation(engine: Engine, api_key: str | None) -> None:
    """Also behind the API key (pure ASGI middleware, which must not swallow the disconnect)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with BackgroundServer(engine, port=0, api_key=api_key) as server:
        if api_key:
            assert requests.get(server.url + "/api/tags", timeout=10).status_code == 401
        body = {"model": GEMMA, "prompt": "Tell me a very long story.", "options": {"num_predict": 3000, "seed": 1}}
        with requests.post(server.url + "/api/generate", data=json.dumps(body), stream=True, timeout=60,
                           headers=headers) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
            lines = resp.iter_lines()
            for _ in range(3):
                assert json.loads(next(lines))["done"] is False
        # 3000 tokens would take over a minute on 2 cores; a cancelled job frees the model within a token or two
        [entry] = [e for e in engine.scheduler.loaded() if e.name == GEMMA]
        deadline = time.monotonic() + 10
        while entry.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert entry.active == 0
        # Barriers on the model's thread, not a timed wait: a call runs between two decode steps, so one
        # full step runs between these two calls, and a sequence still decoding would add a token.
        entry.runner.call(lambda: None)
        decoded = gemma_stats(engine).tokens_decoded
        entry.runner.call(lambda: None)
        assert gemma_stats(engine).tokens_decoded == decoded < 200  # nothing runs on behind the client's back
        # and the model still answers
        again = post(server.url, "/api/generate", {"model": GEMMA, "prompt": "Hi", "stream": False,
                                                    "options": {"num_predict": 3}}, **headers)
        assert again.status_code == 200 and again.json()["eval_count"] == 3


def gemma_stats(engine: Engine) -> LoadedStats:
    [stats] = [s for s in engine.stats() if s.name == GEMMA and not s.embedding and not s.expiring]
    return stats


# ---- copy over an existing name -------------------------------------------------------------------


def test_copying_all_minilm_over_gemma_keeps_gemmas_weights(tmp_path: Path, clone_registered) -> None:
    store = clone_registered(tmp_path / "models")
    weights = store.find(GEMMA).model_path
    with Engine(store) as engine, BackgroundServer(engine, port=0) as server:
        assert post(server.url, "/api/copy", {"source": MINILM, "destination": GEMMA}).status_code == 200
        assert weights.is_file() and weights.stat().st_size > 200e6  # the 253 MB are still there
        shown = post(server.url, "/api/show", {"model": GEMMA}).json()
        assert shown["details"]["family"] == "bert"  # the destination now serves all-minilm
        embedded = post(server.url, "/api/embed", {"model": GEMMA, "input": "hello"})
        assert embedded.status_code == 200 and len(embedded.json()["embeddings"][0]) == 384


# ---- bodies ---------------------------------------------------------------------------------------


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM): what buffering a body whole would have cost."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_200_mb_body_is_refused_with_413_while_it_streams_in(tmp_path: Path, clone_registered, serve_process) -> None:
    served = serve_process(clone_registered(tmp_path / "models").root)
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # 200 MB of JSON text: {"model": "gemma3:270m", "prompt": "xxxx..."}
        fh.write(b'{"model": "gemma3:270m", "prompt": "')
        block = b"x" * (1 << 20)
        for _ in range(200):
            fh.write(block)
        fh.write(b'"}')
    before = _peak_rss(served.proc.pid)
    declared = curl("-X", "POST", "--data-binary", f"@{big}", "-o", tmp_path / "out1", "-w", "%{http_code}",
                    served.url + "/api/generate")
    assert declared.stdout == "413", declared.stderr
    assert "request body too large" in json.loads((tmp_path / "out1").read_text())["error"]
    chunked = curl("-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{big}",
                   "-o", tmp_path / "out2", "-w", "%{http_code}", served.url + "/v1/chat/completions")
    assert chunked.stdout == "413", chunked.stderr
    assert json.loads((tmp_path / "out2").read_text())["error"]["type"] == "invalid_request_error"
    grown = _peak_rss(served.proc.pid) - before
    print(f"peak RSS grew by {grown / 1e6:.0f} MB for two 200 MB bodies (limit 100 MiB)")
    assert grown < 250e6  # at most the 100 MiB limit is ever held (it was 788 MB for one body)
    assert requests.get(served.url + "/api/tags", timeout=10).status_code == 200


def test_the_body_limit_is_configurable_and_blob_uploads_are_not_bound_by_it(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MAGIC_MAX_BODY", "1000")
    with BackgroundServer(engine, port=0) as server:
        resp = post(server.url, "/api/chat", {"model": GEMMA, "messages": [{"role": "user", "content": "x" * 2000}]})
        assert resp.status_code == 413 and "1000 bytes" in resp.json()["error"]
        data = os.urandom(5000)
        import hashlib

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert requests.post(f"{server.url}/api/blobs/{digest}", data=data, timeout=10).status_code == 201


def test_blob_uploads_hash_write_and_fsync_off_the_event_loop(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    for name in ("write", "commit"):
        original = getattr(BlobWriter, name)

        def spy(self, *args, _original=original):  # noqa: ANN001, ANN202
            threads.append(threading.current_thread().name)
            return _original(self, *args)

        monkeypatch.setattr(BlobWriter, name, spy)
    data = os.urandom(9 << 20)
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with BackgroundServer(engine, port=0) as server:
        assert requests.post(f"{server.url}/api/blobs/{digest}", data=data, timeout=60).status_code == 201
    assert threads and "ollama-magic-http" not in threads  # the event loop's thread never hashed or wrote
    assert engine.store.blobs.has(digest)


# ---- every client mistake is a 4xx in its envelope ------------------------------------------------

USER = [{"role": "user", "content": "hi"}]
NATIVE_MISTAKES = [
    ("/api/show", {"model": "h" * 300 + "/ns/m:t"}),
    ("/api/copy", {"source": GEMMA, "destination": "h" * 300 + "/ns/m:t"}),
    ("/api/generate", {"model": GEMMA, "prompt": "hi", "keep_alive": 1e300}),
    ("/api/generate", '{"model": "gemma3:270m", "prompt": "hi", "keep_alive": NaN}'),
    ("/api/generate", {"model": GEMMA, "prompt": "hi", "keep_alive": True}),
    ("/api/chat", {"model": GEMMA, "messages": USER, "keep_alive": "9999999999h"}),
    ("/api/generate", {"model": GEMMA, "prompt": "hi", "context": [10**12]}),
    ("/api/generate", {"model": GEMMA, "prompt": "hi", "context": [-1]}),
    ("/api/generate", {"model": GEMMA, "prompt": "hi", "context": [2**31 - 1], "options": {"num_predict": 1}}),
    ("/api/chat", {"model": GEMMA, "messages": [{"role": "user", "content": "hi", "images": 5}]}),
    ("/api/chat", {"model": GEMMA, "messages": [{"role": "user", "content": "hi", "images": [5]}]}),
    ("/api/chat", {"model": GEMMA, "messages": [{"role": "assistant", "tool_calls": "call it"}]}),
    ("/api/chat", {"model": GEMMA, "messages": [{"role": "assistant", "tool_calls": [{"function": 5}]}]}),
    ("/api/generate", {"model": GEMMA, "prompt": "hi", "options": {"num_predict": -3}}),
    ("/api/generate", {"model": "", "prompt": "hi"}),
    ("/api/generate", {"model": GEMMA, "prompt": "hi", "stream": "yes"}),
    ("/api/create", {"model": "broken", "from": GEMMA, "template": "{{ .Prompt "}),
    ("/api/create", {"model": "broken", "modelfile": "FROM gemma3:270m\nTEMPLATE {{ if }}"}),
]
OPENAI_MISTAKES = [
    ("/v1/chat/completions", {"model": GEMMA, "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
    ("/v1/chat/completions", {"model": GEMMA, "messages": [{"role": "user", "content": ["hello"]}]}),
    ("/v1/chat/completions", {"model": GEMMA, "messages": [{"role": "user", "content": [{"type": "audio"}]}]}),
    ("/v1/chat/completions", {"model": GEMMA, "messages": [{"role": "assistant", "tool_calls": "x"}, *USER]}),
    ("/v1/chat/completions", {"model": GEMMA, "messages": [
        {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
        *USER]}),
    ("/v1/chat/completions", {"model": GEMMA, "messages": [
        {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "[1]"}}]},
        *USER]}),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER,
                              "response_format": {"type": "json_schema", "json_schema": "{}"}}),
    ("/v1/chat/completions", {"model": GEMMA, "messages": USER, "max_tokens": -1}),
    ("/v1/completions", {"model": GEMMA, "prompt": "hi", "max_tokens": -1}),
    ("/v1/chat/completions", {"model": GEMMA, "messages": []}),
    ("/v1/embeddings", {"model": MINILM, "input": [1, 2]}),
    ("/v1/embeddings", {"model": MINILM, "input": "x", "encoding_format": "hex"}),
]


@pytest.mark.parametrize("path, body", NATIVE_MISTAKES)
def test_native_client_mistakes_are_400s_with_an_error_line(url: str, engine: Engine, path: str, body) -> None:
    resp = post(url, path, body)
    assert resp.status_code == 400, resp.text
    assert isinstance(resp.json()["error"], str) and resp.json()["error"]
    assert not engine.store.exists("broken")


@pytest.mark.parametrize("path, body", OPENAI_MISTAKES)
def test_openai_client_mistakes_are_400s_in_openais_envelope(url: str, path: str, body) -> None:
    resp = post(url, path, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_a_bad_ollama_host_is_one_error_line() -> None:
    for value in ("127.0.0.1:notaport", "127.0.0.1:70000"):
        done = subprocess.run([sys.executable, "-m", "ollama_magic", "serve"], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "OLLAMA_HOST": value})
        assert done.returncode == 1 and done.stderr.startswith("Error: invalid OLLAMA_HOST")
        assert done.stderr.count("\n") == 1, done.stderr


# ---- load-only streams, ps --------------------------------------------------------------------------


@pytest.mark.parametrize("path, body, reason", [
    ("/api/generate", {"model": GEMMA}, "load"),
    ("/api/chat", {"model": GEMMA}, "load"),
    ("/api/generate", {"model": GEMMA, "keep_alive": 0}, "unload"),
    ("/v1/completions", {"model": GEMMA, "prompt": "", "stream": True}, None),
])
def test_streaming_load_and_unload_requests_end_cleanly(url: str, path: str, body: dict, reason: str | None) -> None:
    done = curl("-N", "--fail-with-body", url + path, "-d", json.dumps(body))
    assert done.returncode == 0, done.stderr  # was 18: the body ended mid-chunk
    if path.startswith("/v1"):
        assert done.stdout.endswith("data: [DONE]\n\n")
    else:
        [line] = done.stdout.splitlines()
        assert json.loads(line)["done"] is True
        assert json.loads(line)["done_reason"] == reason


def test_the_ollama_client_streams_a_load(url: str) -> None:
    chunks = list(ollama.Client(host=url).generate(GEMMA, stream=True))
    assert [c.done for c in chunks] == [True] and chunks[0].done_reason == "load"


def test_ps_reports_the_context_each_request_really_gets(url: str, engine: Engine) -> None:
    """With parallel slots llama.cpp allocates num_ctx x slots (rounded up); the decoder caps every
    sequence at num_ctx, so that is the context a request gets and what ps reports."""
    post(url, "/api/generate", {"model": GEMMA, "prompt": "hi", "stream": False, "options": {"num_ctx": 300, "num_predict": 1}})
    [entry] = [e for e in engine.scheduler.loaded() if e.name == GEMMA]
    [model] = [m for m in requests.get(url + "/api/ps", timeout=10).json()["models"] if m["name"] == GEMMA]
    assert model["context_length"] == entry.runner.n_ctx == 300
    assert entry.runner.lctx.n_ctx >= 300 * entry.runner.load_options.num_parallel
    post(url, "/api/generate", {"model": GEMMA, "keep_alive": 0, "stream": False})
