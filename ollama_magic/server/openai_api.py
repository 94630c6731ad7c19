"""The OpenAI-compatible endpoints (``/v1/*``) as Ollama maps them onto its native API.

Requests are translated to Engine calls (``max_tokens`` -> ``num_predict``, ``response_format`` ->
``format``, temperature and top_p defaulting to 1.0 as in OpenAI), and results back to OpenAI's
shapes: ``chat.completion`` objects or SSE ``data:`` chunks ending with ``[DONE]``.
"""

from __future__ import annotations

import base64
import json
import random
import struct
import time
from typing import Any, Optional, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from ..engine import Engine
from ..errors import InvalidRequest, NotFound, OllamaMagicError
from ..names import ModelName
from .streaming import dumps, in_thread, open_stream

router = APIRouter(prefix="/v1", tags=["openai"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatCompletionBody(_Body):
    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    seed: Optional[int] = None
    stop: Optional[Union[str, list[str]]] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    response_format: Optional[dict[str, Any]] = None
    tools: Optional[list[dict[str, Any]]] = None


class CompletionBody(_Body):
    model: str
    prompt: str
    suffix: Optional[str] = None
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    max_tokens: Optional[int] = None
    seed: Optional[int] = None
    stop: Optional[Union[str, list[str]]] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None


class EmbeddingBody(_Body):
    model: str
    input: Union[str, list[str], None] = None
    dimensions: Optional[int] = None
    encoding_format: Optional[str] = None


def openai_error(exc: OllamaMagicError) -> JSONResponse:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(exc.status_code, "api_error")
    return JSONResponse({"error": {"message": str(exc), "type": kind, "param": None, "code": None}}, status_code=exc.status_code)


def _options(body: ChatCompletionBody | CompletionBody) -> dict[str, Any]:
    options: dict[str, Any] = {
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if not body.top_p else body.top_p,
    }
    limit = getattr(body, "max_completion_tokens", None) or body.max_tokens
    for key, value in (("num_predict", limit), ("seed", body.seed), ("frequency_penalty", body.frequency_penalty),
                       ("presence_penalty", body.presence_penalty)):
        if value is not None:
            options[key] = value
    if body.stop is not None:
        options["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
    return options


def _format(response_format: dict[str, Any] | None) -> Any:
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format json_schema needs json_schema.schema")
        return schema
    if kind in (None, "text"):
        return None
    raise InvalidRequest(f"unknown response_format type {kind!r}")


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not messages:
        raise InvalidRequest("[] is too short - 'messages'")
    native: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        content = m.get("content")
        extra: dict[str, Any] = {}
        if role == "tool":
            extra["tool_name"] = m.get("name") or m.get("tool_call_id") or ""
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                fn = call.get("function") or {}
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    raise InvalidRequest("invalid tool call arguments") from None
                calls.append({"function": {"name": fn.get("name", ""), "arguments": args}})
            extra["tool_calls"] = calls
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    native.append({"role": role, "content": part.get("text", ""), **extra})
                elif part.get("type") == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    if not isinstance(url, str) or not url.startswith("data:"):
                        raise InvalidRequest("image URLs are not currently supported, please use base64 encoded data instead")
                    native.append({"role": role, "content": "", "images": [url.split(",", 1)[-1]], **extra})
                else:
                    raise InvalidRequest(f"unsupported content part type {part.get('type')!r}")
        elif content is None or isinstance(content, str):
            native.append({"role": role, "content": content or "", **extra})
        else:
            raise InvalidRequest("invalid message content type")
    return native


def _tool_calls(message: Any) -> list[dict[str, Any]] | None:
    if not getattr(message, "tool_calls", None):
        return None
    return [
        {"id": f"call_{random.randrange(16**8):08x}", "index": i, "type": "function",
         "function": {"name": c.function.name, "arguments": json.dumps(dict(c.function.arguments))}}
        for i, c in enumerate(message.tool_calls)
    ]


def _usage(final: Any) -> dict[str, int]:
    prompt, completion = final.prompt_eval_count or 0, final.eval_count or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(obj: Any) -> str:
    return f"data: {dumps(obj)}\n\n"


def _sse_error(exc: OllamaMagicError) -> str:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(exc.status_code, "api_error")
    return _sse({"error": {"message": str(exc), "type": kind, "param": None, "code": None}})


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionBody, request: Request) -> Response:
    engine: Engine = request.app.state.engine
    ident, created = f"chatcmpl-{random.randrange(999)}", int(time.time())
    base = {"id": ident, "created": created, "model": body.model, "system_fingerprint": "fp_ollama"}
    try:
        messages, fmt, options = _messages(body.messages), _format(body.response_format), _options(body)
        call = lambda: engine.chat(body.model, messages, tools=body.tools or None, format=fmt,  # noqa: E731
                                   options=options, stream=body.stream)
        result = await in_thread(call, request)
        if not body.stream:
            message = result.message
            calls = _tool_calls(message)
            reply: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
            if calls:
                reply["tool_calls"] = calls
            reason = "tool_calls" if calls else result.done_reason
            return JSONResponse({**base, "object": "chat.completion",
                                 "choices": [{"index": 0, "message": reply, "finish_reason": reason, "logprobs": None}],
                                 "usage": _usage(result)})
    except OllamaMagicError as exc:
        return openai_error(exc)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    state = {"first": True, "final": None}

    def encode(chunk: Any) -> str:
        if chunk.done:
            state["final"] = chunk
            calls = _tool_calls(chunk.message)
            out = ""
            if calls:
                out += _sse({**base, "object": "chat.completion.chunk",
                             "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}]})
            reason = "tool_calls" if calls else chunk.done_reason
            return out + _sse({**base, "object": "chat.completion.chunk",
                               "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
        delta: dict[str, Any] = {"content": chunk.message.content}
        if state["first"]:
            delta = {"role": "assistant", **delta}
            state["first"] = False
        return _sse({**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})

    def closing() -> str:
        out = ""
        if include_usage and state["final"] is not None:
            out += _sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": _usage(state["final"])})
        return out + "data: [DONE]\n\n"

    try:
        stream, first = await open_stream(result, encode, _sse_error)
    except OllamaMagicError as exc:
        return openai_error(exc)
    return StreamingResponse(stream.body(first, closing), media_type="text/event-stream")


@router.post("/completions")
async def completions(body: CompletionBody, request: Request) -> Response:
    engine: Engine = request.app.state.engine
    ident, created = f"cmpl-{random.randrange(999)}", int(time.time())
    base = {"id": ident, "object": "text_completion", "created": created, "model": body.model,
            "system_fingerprint": "fp_ollama"}
    try:
        options = _options(body)
        result = await in_thread(lambda: engine.generate(body.model, body.prompt, suffix=body.suffix,
                                                         options=options, stream=body.stream), request)
        if not body.stream:
            return JSONResponse({**base, "choices": [{"text": result.response, "index": 0, "logprobs": None,
                                                      "finish_reason": result.done_reason}], "usage": _usage(result)})
    except OllamaMagicError as exc:
        return openai_error(exc)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    state: dict[str, Any] = {"final": None}

    def encode(chunk: Any) -> str:
        if chunk.done:
            state["final"] = chunk
        choice = {"text": chunk.response or "", "index": 0, "logprobs": None,
                  "finish_reason": chunk.done_reason if chunk.done else None}
        return _sse({**base, "choices": [choice]})

    def closing() -> str:
        out = ""
        if include_usage and state["final"] is not None:
            out += _sse({**base, "choices": [], "usage": _usage(state["final"])})
        return out + "data: [DONE]\n\n"

    try:
        stream, first = await open_stream(result, encode, _sse_error)
    except OllamaMagicError as exc:
        return openai_error(exc)
    return StreamingResponse(stream.body(first, closing), media_type="text/event-stream")


@router.post("/embeddings")
async def embeddings(body: EmbeddingBody, request: Request) -> Response:
    engine: Engine = request.app.state.engine
    try:
        if body.input is None or body.input == []:
            raise InvalidRequest("invalid input")
        if body.encoding_format not in (None, "float", "base64"):
            raise InvalidRequest(f"Invalid value for 'encoding_format' = {body.encoding_format}. "
                                 "Supported values: ['float', 'base64'].")
        texts = [body.input] if isinstance(body.input, str) else body.input
        result = await in_thread(lambda: engine.embed(body.model, texts, dimensions=body.dimensions))
    except OllamaMagicError as exc:
        return openai_error(exc)

    def encode(vector: list[float]) -> Any:
        if body.encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return vector

    count = result.prompt_eval_count or 0
    return JSONResponse({"object": "list", "model": body.model,
                         "data": [{"object": "embedding", "embedding": encode(v), "index": i} for i, v in enumerate(result.embeddings)],
                         "usage": {"prompt_tokens": count, "total_tokens": count}})


def _model_entry(model: Any) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": int(model.modified_at.timestamp()),
            "owned_by": ModelName.parse(model.name).namespace}


@router.get("/models")
async def models(request: Request) -> JSONResponse:
    listed = await in_thread(request.app.state.engine.list)
    return JSONResponse({"object": "list", "data": [_model_entry(m) for m in listed.models]})


@router.get("/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> Response:
    engine: Engine = request.app.state.engine
    try:
        record = await in_thread(lambda: engine.store.find(model))
        if record is None:
            raise NotFound(f'model "{model}" not found')
    except OllamaMagicError as exc:
        return openai_error(exc)
    return JSONResponse({"id": model, "object": "model", "created": int(record.modified_at.timestamp()),
                         "owned_by": record.name.namespace})
