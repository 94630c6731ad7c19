"""One error envelope per API, whatever fails: our exceptions, bad bodies, unknown paths, bugs, and
the middleware's own refusals. An app over an empty store (no model), driven by Starlette's TestClient."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ollama_magic.engine import Engine
from ollama_magic.errors import ModelNotFound
from ollama_magic.server import create_app
from ollama_magic.store import ModelStore


@pytest.fixture
def client(tmp_path: Path):
    app = create_app(Engine(ModelStore(tmp_path / "models")), api_key="", origins="", max_body=1000)

    @app.get("/api/boom")
    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/v1/missing")
    async def missing() -> None:
        raise ModelNotFound("ghost")

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_a_bug_is_a_json_500_in_the_paths_envelope(client: TestClient) -> None:
    native = client.get("/api/boom")
    assert native.status_code == 500 and native.json() == {"error": "internal error: RuntimeError: a bug"}
    openai = client.get("/v1/boom")
    assert openai.status_code == 500 and openai.json()["error"]["type"] == "api_error"


def test_our_errors_and_bad_bodies_pick_the_envelope_by_path(client: TestClient) -> None:
    assert client.get("/v1/missing").json()["error"] == {"message": 'model "ghost" not found',
                                                          "type": "not_found_error", "param": None, "code": None}
    bad = client.post("/api/chat", content=b'{"model": "m", "stream": "yes"}')
    assert bad.status_code == 400 and bad.json()["error"].startswith("stream:")
    bad = client.post("/v1/completions", content=b'{"model": "m"}')
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_middleware_refusals_use_the_envelope_too(client: TestClient) -> None:
    big = client.post("/api/generate", content=b'{"model": "m", "prompt": "' + b"x" * 2000 + b'"}')
    assert big.status_code == 413 and "1000 bytes" in big.json()["error"]
    foreign = client.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["error"]["type"] == "permission_error"
    assert client.get("/api/nothing").text == "404 page not found"  # gin's words, as Ollama answers


@pytest.mark.parametrize("path, body", [
    ("/api/generate", {"prompt": "hi"}),
    ("/api/chat", {"model": "", "messages": []}),
    ("/api/embed", {"input": "hi"}),
    ("/api/tokenize", {"content": "hi"}),
    ("/api/tokenize", {"model": "", "content": "hi"}),
    ("/api/detokenize", {"tokens": [1]}),
    ("/api/detokenize", {"model": "", "tokens": [1]}),
])
def test_a_missing_or_empty_model_is_ollamas_model_is_required_on_every_route(client: TestClient, path: str,
                                                                                body: dict) -> None:
    resp = client.post(path, json=body)
    assert resp.status_code == 400 and resp.json() == {"error": "model is required"}


def test_tokenize_checks_its_body_as_the_other_routes_do(client: TestClient) -> None:
    resp = client.post("/api/tokenize", json={"model": "m", "content": 5})
    assert resp.status_code == 400 and resp.json()["error"].startswith("content:")
    resp = client.post("/api/detokenize", json={"model": "m", "tokens": ["a"]})
    assert resp.status_code == 400 and resp.json()["error"].startswith("tokens.0:")
    resp = client.post("/api/tokenize", json={"model": "ghost", "content": "hi"})
    assert resp.status_code == 404 and resp.json() == {"error": 'model "ghost" not found'}
