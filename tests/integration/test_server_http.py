"""What a raw HTTP client sees from our server beyond the happy paths: Ollama's error statuses and
bodies, the API key, CORS and the OpenAPI document."""

from __future__ import annotations

import json

import pytest
import requests

from ollama_magic import Engine
from ollama_magic.server import BackgroundServer

from .conftest import engine_and_url_fixtures

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"


engine, url = engine_and_url_fixtures("http")


def post(url: str, path: str, body: str | dict) -> requests.Response:
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(url + path, data=data.encode(), timeout=60)


@pytest.mark.parametrize(
    "path, body, words",
    [
        ("/api/generate", '{"model": "gemma3:270m", "prompt": ', "invalid JSON"),
        ("/api/chat", "", "missing request body"),
        ("/api/chat", '{"model": "gemma3:270m", "messages": "hello"}', "messages"),
        ("/api/generate", '{"model": "gemma3:270m", "prompt": 5}', "prompt"),
        ("/api/generate", '{"model": "gemma3:270m", "options": {"temperature": "hot"}}', 'option "temperature"'),
        ("/api/generate", '{"model": "gemma3:270m", "raw": true, "system": "x", "prompt": "y"}', "raw mode"),
        ("/api/embed", '{"model": "all-minilm", "input": 5}', "input"),
        ("/api/copy", '{"source": "gemma3:270m"}', "destination"),
        ("/api/create", '{"model": "x", "from": "../../etc/passwd"}', "a file must be uploaded first"),
        ("/api/show", '{"model": "bad name!"}', "invalid model name"),
    ],
)
def test_bad_requests_are_400_with_an_error_body(url: str, path: str, body: str, words: str) -> None:
    resp = post(url, path, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert isinstance(error, str) and words.lower() in error.lower()


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/api/generate", {"model": "nope", "prompt": "hi"}),
        ("POST", "/api/chat", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
        ("POST", "/api/show", {"model": "nope"}),
        ("POST", "/api/embed", {"model": "nope", "input": "hi"}),
        ("POST", "/api/copy", {"source": "nope", "destination": "other"}),
        ("DELETE", "/api/delete", {"model": "nope"}),
    ],
)
def test_unknown_model_is_404_in_ollamas_words(url: str, method: str, path: str, body: dict) -> None:
    resp = requests.request(method, url + path, data=json.dumps(body), timeout=60)
    assert resp.status_code == 404
    assert resp.json() == {"error": 'model "nope" not found'}


def test_unknown_path_and_wrong_method(url: str) -> None:
    resp = requests.get(url + "/api/nothing-here", timeout=10)
    assert resp.status_code == 404 and resp.text == "404 page not found"
    resp = requests.get(url + "/api/generate", timeout=10)
    assert resp.status_code == 405 and resp.json() == {"error": "method not allowed"}
    assert requests.delete(url + "/api/tags", timeout=10).status_code == 405


def test_missing_blob_and_a_blob_with_the_wrong_digest(url: str, engine: Engine) -> None:
    digest = "sha256:" + "0" * 64
    assert requests.head(f"{url}/api/blobs/{digest}", timeout=10).status_code == 404
    resp = requests.post(f"{url}/api/blobs/{digest}", data=b"not those bytes", timeout=10)
    assert resp.status_code == 400 and "digest" in resp.json()["error"]
    assert not engine.store.blobs.has(digest)
    assert requests.post(f"{url}/api/blobs/sha256:xyz", data=b"", timeout=10).status_code == 400


def test_push_to_an_unreachable_registry_says_which(url: str) -> None:
    resp = post(url, "/api/push", {"model": "127.0.0.1:1/library/nothing:latest", "insecure": True, "stream": False})
    assert resp.status_code == 404 and resp.json() == {"error": 'model "127.0.0.1:1/library/nothing:latest" not found'}


def test_openai_errors_use_openais_envelope(url: str) -> None:
    resp = post(url, "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 404 and 'model "nope" not found' in resp.json()["error"]["message"]
    resp = post(url, "/v1/chat/completions", '{"model": ')
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_head_and_version(url: str) -> None:
    assert requests.head(url + "/", timeout=10).status_code == 200
    assert requests.get(url + "/", timeout=10).text == "Ollama is running"
    assert isinstance(requests.get(url + "/api/version", timeout=10).json()["version"], str)


def test_openapi_document_lists_every_route(url: str) -> None:
    paths = requests.get(url + "/openapi.json", timeout=10).json()["paths"]
    expected = {
        "/api/generate": "post", "/api/chat": "post", "/api/create": "post", "/api/blobs/{digest}": "head",
        "/api/tags": "get", "/api/show": "post", "/api/copy": "post", "/api/delete": "delete", "/api/pull": "post",
        "/api/push": "post", "/api/ps": "get", "/api/embed": "post", "/api/embeddings": "post", "/api/version": "get",
        "/v1/chat/completions": "post", "/v1/completions": "post", "/v1/embeddings": "post", "/v1/models": "get",
        "/v1/models/{model}": "get",
    }
    for path, method in expected.items():
        assert method in paths.get(path, {}), path
    assert "post" in paths["/api/blobs/{digest}"]


def test_api_key_and_cors(engine: Engine) -> None:
    server = BackgroundServer(engine, port=0, api_key="s3cret", origins="https://notebooks.example.org")
    url = server.start()
    try:
        assert requests.get(url + "/api/tags", timeout=10).status_code == 401
        wrong = requests.get(url + "/api/tags", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401 and "unauthorized" in wrong.json()["error"]
        ok = requests.get(url + "/api/tags", headers={"Authorization": "Bearer s3cret"}, timeout=10)
        assert ok.status_code == 200 and ok.json()["models"]

        def preflight(origin: str) -> requests.Response:
            return requests.options(url + "/api/chat", timeout=10, headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type"})

        for allowed in ("https://notebooks.example.org", "http://localhost:8888", "http://127.0.0.1:3000"):
            resp = preflight(allowed)
            assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == allowed
        denied = preflight("https://evil.example.com")
        assert "access-control-allow-origin" not in denied.headers
    finally:
        server.stop()
    # stopping frees the port: a new server can take it at once
    again = BackgroundServer(engine, port=int(url.rsplit(":", 1)[1]))
    assert again.start() == url
    again.stop()
    assert again.url is None and not again.status().running
