"""The rerank routes: ``Engine.rerank`` in the two shapes clients send.

``POST /api/rerank`` is the shape the Ollama pull requests for reranking proposed (#7219, then #11328:
``model``, ``query``, ``documents``, ``top_n``, ``options``, ``keep_alive`` -> ``results`` of
``{index, document, relevance_score}``), in Ollama's error envelope. Ollama itself has none (#3368).

``POST /v1/rerank`` is llama-server's (Jina's) shape, byte for byte where llama-server defines it
(``format_response_rerank``): ``{model, object: "list", usage: {prompt_tokens, total_tokens}, results:
[{index, relevance_score}]}``, in OpenAI's error envelope. ``return_documents`` adds each document as
``{"text": ...}`` (Jina's and Cohere's form; llama-server ignores the field). It is also served where
llama-server serves it (``/v1/reranking``, ``/rerank``, ``/reranking``) and where Cohere's SDK posts
(``ClientV2.rerank`` -> ``/v2/rerank``; its v1 ``Client.rerank`` -> ``/v1/rerank``). Documents may be
strings or ``{"text": ...}`` objects, as Cohere accepts.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from ..engine import Engine
from ..engine.rerank import MAX_DOCUMENTS
from .schemas import RERANK_COMPATIBLE_PATHS, Body, KeepAlive, ModelNameField, native_responses, openai_responses
from .streaming import in_thread, ollama_response

router = APIRouter(tags=["rerank"])
#: the paths of the llama-server/Jina/Cohere shape
COMPATIBLE_PATHS = RERANK_COMPATIBLE_PATHS

Documents = list[StrictStr]


class OllamaRerankBody(Body):
    model: ModelNameField
    query: StrictStr = Field(min_length=1)
    documents: Documents = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: Optional[StrictInt] = Field(default=None, ge=1)
    options: Optional[dict[str, Any]] = None
    keep_alive: KeepAlive = None
    #: cut a document that does not fit the context with the query (default), or refuse it (false)
    truncate: Optional[StrictBool] = None


class OllamaRerankResult(BaseModel):
    index: int
    document: str
    relevance_score: float


class OllamaRerankResponse(BaseModel):
    model: str
    results: list[OllamaRerankResult]


class TextDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: StrictStr


class CompatibleRerankBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: ModelNameField
    query: StrictStr = Field(min_length=1)
    documents: list[Union[StrictStr, TextDocument]] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: Optional[StrictInt] = Field(default=None, ge=1)
    return_documents: Optional[StrictBool] = None
    truncate: Optional[StrictBool] = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class DocumentText(BaseModel):
    text: str


class CompatibleRerankResult(BaseModel):
    index: int
    relevance_score: float
    document: Optional[DocumentText] = None


class CompatibleRerankResponse(BaseModel):
    model: str
    object: str = "list"
    usage: Usage
    results: list[CompatibleRerankResult]


def _engine(request: Request) -> Engine:
    return request.app.state.engine


@router.post("/api/rerank", response_model=OllamaRerankResponse, responses=native_responses())
async def rerank(body: OllamaRerankBody, request: Request) -> Response:
    """Not in Ollama (#3368): ``documents`` by relevance to ``query``, most relevant first."""
    engine = _engine(request)

    def call() -> dict[str, Any]:
        ranked = engine.rerank(body.model, body.query, body.documents, top_n=body.top_n, options=body.options,
                               keep_alive=body.keep_alive, truncate=body.truncate is not False)
        return {"model": body.model, "results": [
            {"index": r.index, "document": r.document, "relevance_score": r.relevance_score} for r in ranked.results]}

    return await ollama_response(call, stream=False, request=request)


async def rerank_compatible(body: CompatibleRerankBody, request: Request) -> JSONResponse:
    """llama-server's ``/v1/rerank`` (Jina's and Cohere's shape)."""
    engine = _engine(request)
    texts = [doc if isinstance(doc, str) else doc.text for doc in body.documents]
    ranked = await in_thread(lambda: engine.rerank(body.model, body.query, texts, top_n=body.top_n,
                                                   truncate=body.truncate is not False), request)
    results = []
    for r in ranked.results:
        item: dict[str, Any] = {"index": r.index, "relevance_score": r.relevance_score}
        if body.return_documents:
            item["document"] = {"text": texts[r.index]}
        results.append(item)
    count = ranked.prompt_eval_count
    return JSONResponse({"model": body.model, "object": "list",
                         "usage": {"prompt_tokens": count, "total_tokens": count}, "results": results})


for _path in COMPATIBLE_PATHS:
    router.add_api_route(_path, rerank_compatible, methods=["POST"], response_model=CompatibleRerankResponse,
                         responses=openai_responses(), name=f"rerank_compatible{_path.replace('/', '_')}")
