"""Reranking on real models: a tiny cross-encoder built with transformers and converted by llama.cpp's
converter (its scores against transformers' own and llama-server's), the chat-model path on the embedded
smollm2 and gemma3, both HTTP routes through httpx and Cohere's SDK, the bounds, and the front ends."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

import cohere
import httpx
import pytest

from ollama_magic import Engine
from ollama_magic.backends import RemoteBackend
from ollama_magic.engine.delivery import CANCEL_SCOPE
from ollama_magic.engine.rerank import MAX_DOCUMENTS, relevance_prompt
from ollama_magic.errors import EngineError, InvalidRequest
from ollama_magic.openai_backend import OpenAIBackend
from ollama_magic.server.background import BackgroundServer
from ollama_magic.store import ModelStore

from .conftest import LLAMA_SERVER_HINT, _free_port, _start, _stop, llama_server_binary

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "tiny_cross_encoder.py"
RERANKER = "tiny-reranker"
QUERY = "what is the capital of france"
PAIRS = ["paris is the capital of france", "the cat sat on the mat", "bananas are yellow",
         "a long document " * 10, "Émile's naïve café, 42 times!"]
#: an easy pair for the chat-model path: one relevant document among unrelated ones. (On "How many legs
#: does a spider have?" with "A spider has eight legs." gemma3:270m put a sentence about tea first, and
#: smollm2 scored the two within 0.01: these models are too small to rank dependably; see BENCHMARKS.md)
EASY = {"What is the capital of France?": ["Bananas are a yellow fruit rich in potassium.",
                                           "Paris is the capital and largest city of France.",
                                           "The stock market closed lower on Tuesday."]}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, clone_registered: Callable[[Path], ModelStore],
           cross_encoder_dir: Path) -> Iterator[Engine]:
    with Engine(clone_registered(tmp_path_factory.mktemp("rerank") / "models")) as engine:
        engine.create(RERANKER, from_=str(cross_encoder_dir))
        yield engine


@pytest.fixture(scope="module")
def url(engine: Engine) -> Iterator[str]:
    with BackgroundServer(engine, port=0) as server:
        yield server.url


def transformers_scores(model_dir: Path, pairs: list[tuple[str, str]], tmp_path: Path) -> list[float]:
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    done = subprocess.run([sys.executable, str(FIXTURE), str(model_dir), str(tmp_path / "pairs.json")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def by_index(reply) -> list[float]:  # noqa: ANN001
    return [score for _, score in sorted((r.index, r.relevance_score) for r in reply.results)]


def test_the_converted_cross_encoder_is_a_reranker_and_scores_as_transformers(
        engine: Engine, cross_encoder_dir: Path, tmp_path: Path) -> None:
    info = engine.store.find(RERANKER).gguf_info()
    assert info.is_reranker and info.arch_value("pooling_type") is None  # the converter writes no pooling type
    reply = engine.rerank(RERANKER, QUERY, PAIRS)
    assert [r.relevance_score for r in reply.results] == sorted(by_index(reply), reverse=True)
    assert [r.document for r in reply.results] == [PAIRS[r.index] for r in reply.results]
    expected = transformers_scores(cross_encoder_dir, [(QUERY, d) for d in PAIRS], tmp_path)
    assert by_index(reply) == pytest.approx(expected, abs=2e-3)  # f16 matrices in the GGUF: ~5e-4 seen
    assert max(expected) - min(expected) > 0.1  # the scores differ by far more than that
    assert reply.prompt_eval_count > sum(len(d.split()) for d in PAIRS)
    assert [r.index for r in engine.rerank(RERANKER, QUERY, PAIRS, top_n=2).results] == \
        [r.index for r in reply.results][:2]


def test_a_pair_scores_the_same_whatever_documents_come_with_it(engine: Engine) -> None:
    """Packed into one decode, a pair's score moved by ~1e-3 with its neighbours (ggml's kernels differ
    with the batch's size): each pair is decoded alone, as llama-server decodes it."""
    together = by_index(engine.rerank(RERANKER, QUERY, PAIRS))
    alone = [engine.rerank(RERANKER, QUERY, [doc]).results[0].relevance_score for doc in PAIRS]
    assert together == alone


def test_a_cancelled_cross_encoder_rerank_stops_early(engine: Engine) -> None:
    """A client that went away (the request's cancel event, set by the server) stops the pairs still to
    decode: the rest of a 1000-document request is not worked through for nobody."""
    engine.rerank(RERANKER, QUERY, PAIRS[:1])  # loaded
    [entry] = [e for e in engine.scheduler.loaded() if e.key.embedding and e.name.startswith(RERANKER)]
    before = entry.runner.embed_decodes
    gone = threading.Event()
    gone.set()
    token = CANCEL_SCOPE.set(gone)
    try:
        with pytest.raises(EngineError, match="cancelled"):
            engine.rerank(RERANKER, QUERY, [f"document number {i}" for i in range(MAX_DOCUMENTS)])
    finally:
        CANCEL_SCOPE.reset(token)
    assert entry.runner.embed_decodes - before < 10
    assert len(engine.rerank(RERANKER, QUERY, PAIRS).results) == len(PAIRS)  # the model still ranks


def test_llama_server_gives_the_same_scores_for_the_same_gguf(engine: Engine, url: str, tmp_path: Path) -> None:
    binary = llama_server_binary()
    if binary is None:
        pytest.skip(f"llama.cpp's llama-server is not installed: {LLAMA_SERVER_HINT}")
    started: list = []
    try:
        port = _free_port()
        server = _start([str(binary), "--model", str(engine.store.find(RERANKER).model_path), "--reranking", "--alias", RERANKER,
                         "--host", "127.0.0.1", "--port", str(port), "--ctx-size", "256", "--parallel", "1", "--flash-attn", "on"],
                        tmp_path / "llama-server.log", None, started)
        theirs = httpx.post(f"{server.url}/v1/rerank", json={"model": RERANKER, "query": QUERY, "documents": PAIRS},
                            timeout=60).json()
        backend_reply = OpenAIBackend(f"{server.url}/v1").rerank(RERANKER, QUERY, PAIRS, top_n=2)
    finally:
        _stop(started)
    ours = httpx.post(f"{url}/v1/rerank", json={"model": RERANKER, "query": QUERY, "documents": PAIRS},
                      timeout=60).json()
    assert set(ours) == set(theirs) == {"model", "object", "usage", "results"}
    assert ours["usage"] == theirs["usage"]  # the same tokens: the pairs are laid out alike
    assert [r["index"] for r in ours["results"]] == [r["index"] for r in theirs["results"]]
    assert [r["relevance_score"] for r in ours["results"]] == pytest.approx(
        [r["relevance_score"] for r in theirs["results"]], abs=1e-5)
    assert [r.index for r in backend_reply.results] == [r["index"] for r in theirs["results"]][:2]


@pytest.mark.parametrize("model", ["smollm2:135m", "gemma3:270m"])
def test_a_chat_model_ranks_the_relevant_document_first(engine: Engine, model: str) -> None:
    for query, docs in EASY.items():
        reply = engine.rerank(model, query, docs)
        assert reply.results[0].index == 1, (model, query, reply.results)
        assert all(0 < r.relevance_score < 1 for r in reply.results)


def test_the_documents_share_the_query_s_cells(registered: ModelStore) -> None:
    """One pass per document, and the template, instruction and query are decoded once, not per document."""
    query = "Which of these notes mentions the quarterly budget review for the marketing department? " * 3
    docs = [f"Note {i}: the {w} meeting moved to Friday." for i, w in enumerate(["design", "budget", "hiring", "sales"])]
    with Engine(registered) as engine:  # a cold cache
        reply = engine.rerank("smollm2:135m", query, docs)
        decoded = sum(s.tokens_decoded for s in engine.stats() if s.name == "smollm2:135m" and not s.embedding)
        query_tokens = len(engine.tokenize("smollm2:135m", relevance_prompt(query, "")).tokens)
    assert len(reply.results) == 4
    # every prompt is read in full by classify's count; the decoder read the shared part once
    assert reply.prompt_eval_count > 4 * query_tokens
    assert decoded <= reply.prompt_eval_count - 3 * (query_tokens - 20), (decoded, reply.prompt_eval_count)


def test_an_embedding_model_cannot_rank(engine: Engine, url: str) -> None:
    with pytest.raises(InvalidRequest, match='model "all-minilm" cannot rank'):
        engine.rerank("all-minilm", QUERY, PAIRS)
    reply = httpx.post(f"{url}/v1/rerank", json={"model": "all-minilm", "query": QUERY, "documents": PAIRS})
    assert reply.status_code == 400 and "cannot rank" in reply.json()["error"]["message"]


def test_both_routes_through_httpx(engine: Engine, url: str) -> None:
    native = httpx.post(f"{url}/api/rerank", json={"model": RERANKER, "query": QUERY, "documents": PAIRS, "top_n": 3},
                        timeout=60)
    assert native.status_code == 200
    body = native.json()
    assert body["model"] == RERANKER and len(body["results"]) == 3
    assert all(r["document"] == PAIRS[r["index"]] for r in body["results"])
    expected = engine.rerank(RERANKER, QUERY, PAIRS, top_n=3)
    assert [r["index"] for r in body["results"]] == [r.index for r in expected.results]

    shaped = httpx.post(f"{url}/v1/rerank", json={"model": RERANKER, "query": QUERY, "top_n": 2, "return_documents": True,
                                                  "documents": [{"text": d} for d in PAIRS]}, timeout=60).json()
    assert [r["index"] for r in shaped["results"]] == [r.index for r in expected.results][:2]
    assert shaped["results"][0]["document"] == {"text": PAIRS[shaped["results"][0]["index"]]}
    assert shaped["usage"]["prompt_tokens"] == shaped["usage"]["total_tokens"] > 0


def test_cohere_s_client_ranks_through_the_server(url: str) -> None:
    co = cohere.ClientV2(base_url=url, api_key="x")
    reply = co.rerank(model=RERANKER, query=QUERY, documents=PAIRS, top_n=3)
    assert len(reply.results) == 3
    assert [r.relevance_score for r in reply.results] == sorted((r.relevance_score for r in reply.results), reverse=True)
    chat = co.rerank(model="gemma3:270m", query="What is the capital of France?", documents=EASY["What is the capital of France?"])
    assert chat.results[0].index == 1


def test_a_document_too_long_is_cut_or_refused(engine: Engine, url: str) -> None:
    long = "paris " * 2000
    for model in (RERANKER, "smollm2:135m"):
        reply = engine.rerank(model, QUERY, [long, "bananas"], options={"num_ctx": 256})
        assert len(reply.results) == 2
        with pytest.raises(InvalidRequest, match="more than the context holds"):
            engine.rerank(model, QUERY, [long, "bananas"], options={"num_ctx": 256}, truncate=False)
    refused = httpx.post(f"{url}/api/rerank", json={"model": RERANKER, "query": QUERY, "documents": [long],
                                                    "truncate": False}, timeout=60)
    assert refused.status_code == 400 and "more than the context holds" in refused.json()["error"]
    cut = httpx.post(f"{url}/v1/rerank", json={"model": RERANKER, "query": QUERY, "documents": [long]}, timeout=60)
    assert cut.status_code == 200


def test_the_front_end_backends_rank_through_our_server(url: str) -> None:
    remote = RemoteBackend(url).rerank(RERANKER, QUERY, PAIRS, top_n=2)
    openai_shaped = OpenAIBackend(f"{url}/v1").rerank(RERANKER, QUERY, PAIRS, top_n=2)
    assert [r.index for r in remote.results] == [r.index for r in openai_shaped.results]
    assert remote.results[0].document == PAIRS[remote.results[0].index]
