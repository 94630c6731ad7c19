"""Reranking without a model: the request's bounds, the order of the results, which GGUF is a reranker,
both routes' shapes and envelopes (over an engine that scores by word overlap), and the remote backends'
answers for a server that cannot rank."""

from __future__ import annotations

from typing import Any, Sequence

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from ollama_magic.backends import RemoteBackend
from ollama_magic.engine.rerank import MAX_DOCUMENTS, check_rerank, ranked
from ollama_magic.errors import CANNOT_RERANK, InvalidRequest, NotSupported
from ollama_magic.openai_backend import OpenAIBackend
from ollama_magic.server.app import create_app
from ollama_magic.store.gguf_meta import GGUFInfo, TensorInfo

DOCS = ["the cat sat", "paris is the capital of france", "capital letters"]


@pytest.mark.parametrize("documents, top_n, words", [
    ([], None, "non-empty"),
    (["x"] * (MAX_DOCUMENTS + 1), None, f"at most {MAX_DOCUMENTS}"),
    ("one string", None, "list of strings"),
    (["a", 3], None, "every document must be a string"),
    (["a"], 0, "top_n must be a positive integer"),
    (["a"], -2, "top_n must be a positive integer"),
    (["a"], True, "top_n must be a positive integer"),
])
def test_a_request_that_cannot_be_ranked_is_refused_before_any_model(documents: Any, top_n: Any, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        check_rerank("query", documents, top_n)


def test_an_empty_query_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="query"):
        check_rerank("", ["a"], None)


def test_results_are_best_first_cut_to_top_n_and_keep_their_index_and_text() -> None:
    reply = ranked("m", [0.1, 0.9, 0.5], DOCS, 2, prompt_eval_count=7)
    assert [(r.index, r.relevance_score, r.document) for r in reply.results] == [
        (1, 0.9, DOCS[1]), (2, 0.5, DOCS[2])]
    assert reply.prompt_eval_count == 7
    assert [r.index for r in ranked("m", [0.5, 0.5, 0.7], DOCS, None).results] == [2, 0, 1]  # ties: given order


def _info(metadata: dict[str, Any], tensors: Sequence[str] = ()) -> GGUFInfo:
    return GGUFInfo(metadata={"general.architecture": "bert", **metadata},
                    tensors=[TensorInfo(name, 0, (1,), 4) for name in tensors])


def test_which_gguf_is_a_reranker() -> None:
    head = ["cls.weight", "cls.output.weight"]
    assert _info({"bert.pooling_type": 4}).is_reranker  # the GGUF says RANK
    assert not _info({"bert.pooling_type": 1}, head).is_reranker  # it says MEAN: an embedding model
    converted = _info({"bert.attention.causal": False}, head)  # what the converter writes for a cross-encoder
    assert converted.is_reranker and converted.is_embedding_model
    assert not _info({"bert.attention.causal": False}).is_reranker  # no classifier: not one
    assert not _info({}, head).is_reranker  # a causal (generative) model with a head: not one either


class OverlapEngine:
    """Scores a document by the words it shares with the query."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def rerank(self, model: str, query: str, documents: Sequence[str], **kwargs: Any) -> Any:
        self.calls.append(dict(model=model, query=query, documents=list(documents), **kwargs))
        docs = check_rerank(query, documents, kwargs.get("top_n"))
        words = set(query.split())
        return ranked(model, [float(len(words & set(d.split()))) for d in docs], docs, kwargs.get("top_n"), 42)


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(OverlapEngine()))  # type: ignore[arg-type]


def test_the_ollama_route_answers_the_proposed_shape(client: TestClient) -> None:
    reply = client.post("/api/rerank", json={"model": "m", "query": "capital of france", "documents": DOCS,
                                             "top_n": 2})
    assert reply.status_code == 200
    assert reply.json() == {"model": "m", "results": [
        {"index": 1, "document": DOCS[1], "relevance_score": 3.0},
        {"index": 2, "document": DOCS[2], "relevance_score": 1.0}]}


@pytest.mark.parametrize("path", ["/v1/rerank", "/v1/reranking", "/rerank", "/reranking", "/v2/rerank"])
def test_the_llama_server_shape_on_each_of_its_paths(client: TestClient, path: str) -> None:
    reply = client.post(path, json={"model": "m", "query": "capital of france", "documents": DOCS, "top_n": 1})
    assert reply.status_code == 200
    assert reply.json() == {"model": "m", "object": "list", "usage": {"prompt_tokens": 42, "total_tokens": 42},
                            "results": [{"index": 1, "relevance_score": 3.0}]}


def test_documents_as_text_objects_and_returned_on_request(client: TestClient) -> None:
    reply = client.post("/v1/rerank", json={"model": "m", "query": "the cat", "return_documents": True,
                                            "documents": [{"text": "a dog"}, "the cat sat"]})
    assert reply.json()["results"] == [{"index": 1, "relevance_score": 2.0, "document": {"text": "the cat sat"}},
                                       {"index": 0, "relevance_score": 0.0, "document": {"text": "a dog"}}]


@pytest.mark.parametrize("body", [
    {"model": "m", "query": "q", "documents": []},
    {"model": "m", "query": "q", "documents": ["a"], "top_n": 0},
    {"model": "m", "query": "q", "documents": ["a"] * (MAX_DOCUMENTS + 1)},
    {"model": "m", "query": "", "documents": ["a"]},
    {"model": "m", "documents": ["a"]},
])
def test_bounds_are_400_in_each_family_s_envelope(client: TestClient, body: dict[str, Any]) -> None:
    native = client.post("/api/rerank", json=body)
    assert native.status_code == 400 and isinstance(native.json()["error"], str)
    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        shaped = client.post(path, json=body)
        assert shaped.status_code == 400
        assert shaped.json()["error"]["type"] == "invalid_request_error", path


def _mock(status: int, payload: Any) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, json=payload))


def test_an_ollama_without_rerank_is_not_supported_in_one_line() -> None:
    backend = RemoteBackend("http://ollama.test:11434")
    backend.client._client = httpx.Client(base_url=backend.host, transport=httpx.MockTransport(
        lambda request: httpx.Response(404, text="404 page not found")))
    with pytest.raises(NotSupported) as caught:
        backend.rerank("m", "q", ["a"])
    assert str(caught.value) == CANNOT_RERANK.format(host="http://ollama.test:11434", route="/api/rerank")


def _openai(status: int, payload: Any) -> OpenAIBackend:
    backend = OpenAIBackend("http://llama.test/v1")
    backend.client = openai.OpenAI(base_url=backend.host, api_key="x", max_retries=0,
                                   http_client=httpx.Client(transport=_mock(status, payload)))
    backend._served = ["m"]
    return backend


@pytest.mark.parametrize("status, payload", [
    (404, {"error": {"message": "File Not Found", "type": "not_found_error"}}),
    (501, {"error": {"code": 501, "message": "This server does not support reranking. Start it with `--reranking`",
                     "type": "not_supported_error"}}),
])
def test_an_openai_server_without_rerank_is_not_supported(status: int, payload: Any) -> None:
    with pytest.raises(NotSupported, match="cannot rerank"):
        _openai(status, payload).rerank("m", "q", ["a"])


def test_an_openai_server_s_ranking_is_read_back_with_the_documents() -> None:
    backend = _openai(200, {"model": "m", "object": "list", "usage": {"prompt_tokens": 9, "total_tokens": 9},
                            "results": [{"index": 1, "relevance_score": 2.5}, {"index": 0, "relevance_score": -1.0}]})
    reply = backend.rerank("m", "q", ["a", "b"])
    assert [(r.index, r.relevance_score, r.document) for r in reply.results] == [(1, 2.5, "b"), (0, -1.0, "a")]
    assert reply.prompt_eval_count == 9
