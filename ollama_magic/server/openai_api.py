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
from typing import Any, Callable, Iterator, Literal, Optional, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..engine import Engine
from ..engine.toolcalls import tool_call_id
from ..errors import InvalidRequest, NotFound
from ..engine.images import data_url_payload, from_base64
from ..names import ModelName
from .schemas import ModelNameField, openai_responses, sse_responses
from .sse import DONE, sse, sse_response
from .streaming import in_thread

router = APIRouter(prefix="/v1", tags=["openai"], responses=openai_responses())


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImageURL(_Body):
    url: str


class ImagePart(_Body):
    type: Literal["image_url"]
    image_url: Union[ImageURL, str]


class FunctionCall(_Body):
    name: str
    arguments: str = Field(description="the arguments as a JSON text, as OpenAI sends them")


class ToolCall(_Body):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[Union[TextPart, ImagePart]], None] = None
    name: Optional[str] = None
    tool_call_id: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    reasoning: Optional[str] = None
    reasoning_content: Optional[str] = None


class JSONSchemaFormat(_Body):
    name: Optional[str] = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaFormat] = None


class StreamOptions(_Body):
    include_usage: Optional[bool] = None


Stop = Optional[Union[str, list[str]]]
MaxTokens = Optional[int]


class ChatCompletionBody(_Body):
    model: ModelNameField
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: MaxTokens = Field(default=None, ge=1)
    max_completion_tokens: MaxTokens = Field(default=None, ge=1)
    seed: Optional[int] = None
    stop: Stop = None
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    top_p: Optional[float] = Field(default=None, ge=0, le=1)
    frequency_penalty: Optional[float] = Field(default=None, ge=-2, le=2)
    presence_penalty: Optional[float] = Field(default=None, ge=-2, le=2)
    response_format: Optional[ResponseFormat] = None
    tools: Optional[list[dict[str, Any]]] = None
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    reasoning_effort: Optional[str] = None
    reasoning: Optional[dict[str, Any]] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None


class CompletionBody(_Body):
    model: ModelNameField
    prompt: str
    suffix: Optional[str] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: MaxTokens = Field(default=None, ge=1)
    seed: Optional[int] = None
    stop: Stop = None
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    top_p: Optional[float] = Field(default=None, ge=0, le=1)
    frequency_penalty: Optional[float] = Field(default=None, ge=-2, le=2)
    presence_penalty: Optional[float] = Field(default=None, ge=-2, le=2)
    #: OpenAI's legacy form: the number of alternatives (0..20 here) with the chosen tokens' values
    logprobs: Optional[int] = None


class EmbeddingBody(_Body):
    model: ModelNameField
    input: Union[str, list[str]]
    dimensions: Optional[int] = Field(default=None, ge=1)
    encoding_format: Optional[Literal["float", "base64"]] = None


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


def _format(response_format: ResponseFormat | None) -> Any:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return "json"
    if response_format.json_schema is None:
        raise InvalidRequest("response_format json_schema needs json_schema.schema")
    return response_format.json_schema.schema_


def think_from_effort(effort: str | None) -> bool | str | None:
    """OpenAI's reasoning effort as Ollama's ``think`` (its clamping: minimal -> low, xhigh -> max)."""
    mapping: dict[str, bool | str] = {"none": False, "minimal": "low", "low": "low", "medium": "medium",
                                      "high": "high", "max": "max", "xhigh": "max", "ultra": "max"}
    if effort in (None, ""):
        return None
    if effort not in mapping:
        raise InvalidRequest(f'invalid reasoning value: {effort!r} (must be "minimal", "low", "medium", "high", '
                             '"xhigh", "ultra", "max", or "none")')
    return mapping[effort]


def _messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    native: list[dict[str, Any]] = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        extra: dict[str, Any] = {}
        if role == "tool":
            if m.name:
                extra["tool_name"] = m.name
            if m.tool_call_id:
                extra["tool_call_id"] = m.tool_call_id  # the engine finds the call's name from it
        if m.reasoning or m.reasoning_content:
            extra["thinking"] = m.reasoning or m.reasoning_content
        if m.tool_calls:
            calls = []
            for index, call in enumerate(m.tool_calls):
                try:
                    args = json.loads(call.function.arguments or "{}")
                except ValueError:
                    raise InvalidRequest("invalid tool call arguments: not JSON text") from None
                if not isinstance(args, dict):
                    raise InvalidRequest("invalid tool call arguments: not a JSON object")
                calls.append({"id": call.id or "", "function": {"index": index, "name": call.function.name,
                                                                "arguments": args}})
            extra["tool_calls"] = calls
        if isinstance(m.content, list):
            for part in m.content:
                if isinstance(part, TextPart):
                    native.append({"role": role, "content": part.text, **extra})
                    continue
                url = part.image_url.url if isinstance(part.image_url, ImageURL) else part.image_url
                image = from_base64(data_url_payload(url))  # bytes: the engine reads no paths for HTTP
                native.append({"role": role, "content": "", "images": [image], **extra})
        else:
            native.append({"role": role, "content": m.content or "", **extra})
    return native


def _tool_calls(message: Any) -> list[dict[str, Any]] | None:
    if not getattr(message, "tool_calls", None):
        return None
    return [
        {"id": c.id or tool_call_id(), "index": c.function.index, "type": "function",
         "function": {"name": c.function.name, "arguments": json.dumps(dict(c.function.arguments))}}
        for c in message.tool_calls
    ]


def chat_logprobs(entries: Any) -> dict[str, Any] | None:
    """A choice's ``logprobs`` as Ollama's /v1 sends it (``{"content": [...]}``), with
    ``top_logprobs`` always a list, as OpenAI's schema requires."""
    if not entries:
        return None
    content = []
    for entry in entries:
        item = entry.model_dump(mode="json", exclude_none=True)
        item.setdefault("top_logprobs", [])
        content.append(item)
    return {"content": content}


class CompletionOffsets:
    """OpenAI's legacy completion ``logprobs`` (tokens, token_logprobs, top_logprobs, text_offset):
    offsets count characters of the generated text, across the chunks of a stream."""

    def __init__(self, top: int) -> None:
        self.top, self.offset = top, 0

    def __call__(self, entries: Any) -> dict[str, Any] | None:
        if not entries:
            return None
        tokens, values, tops, offsets = [], [], [], []
        for entry in entries:
            tokens.append(entry.token)
            values.append(entry.logprob)
            tops.append({t.token: t.logprob for t in entry.top_logprobs or []})
            offsets.append(self.offset)
            self.offset += len(entry.token)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops if self.top else None,
                "text_offset": offsets}


def _usage(final: Any) -> dict[str, int]:
    prompt, completion = final.prompt_eval_count or 0, final.eval_count or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _completion_stream(result: Iterator[Any], encode: Callable[[Any], str], chunk_base: dict[str, Any],
                             stream_options: StreamOptions | None) -> Response:
    """The SSE tail both completion routes share: frames, then a usage frame when asked, then ``[DONE]``."""
    final: list[Any] = []

    def frame(chunk: Any) -> str:
        if chunk.done:
            final.append(chunk)
        return encode(chunk)

    def closing() -> str:
        usage = ""
        if stream_options is not None and stream_options.include_usage and final:
            usage = sse({**chunk_base, "choices": [], "usage": _usage(final[-1])})
        return usage + DONE

    return await sse_response(result, frame, closing)


@router.post("/chat/completions", responses=sse_responses())
async def chat_completions(body: ChatCompletionBody, request: Request) -> Response:
    engine: Engine = request.app.state.engine
    ident, created = f"chatcmpl-{random.randrange(999)}", int(time.time())
    base = {"id": ident, "created": created, "model": body.model, "system_fingerprint": "fp_ollama"}
    messages, fmt, options = _messages(body.messages), _format(body.response_format), _options(body)
    think = think_from_effort((body.reasoning or {}).get("effort") or body.reasoning_effort)
    result = await in_thread(lambda: engine.chat(body.model, messages, tools=body.tools or None, format=fmt,
                                                 options=options, stream=body.stream, think=think,
                                                 tool_choice=body.tool_choice, logprobs=body.logprobs,
                                                 top_logprobs=body.top_logprobs), request)
    if not body.stream:
        message = result.message
        calls = _tool_calls(message)
        reply: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
        if message.thinking:
            reply["reasoning"] = message.thinking
        if calls:
            reply["tool_calls"] = calls
        reason = "tool_calls" if calls and result.done_reason == "stop" else result.done_reason
        return JSONResponse({**base, "object": "chat.completion",
                             "choices": [{"index": 0, "message": reply, "finish_reason": reason,
                                          "logprobs": chat_logprobs(result.logprobs)}],
                             "usage": _usage(result)})
    chunk_base = {**base, "object": "chat.completion.chunk"}
    state = {"first": True, "called": False}

    def chunk_of(delta: dict[str, Any], reason: str | None = None, logprobs: Any = None) -> str:
        if state["first"]:
            delta = {"role": "assistant", **delta}
            state["first"] = False
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": reason}
        if logprobs:
            choice["logprobs"] = logprobs
        return sse({**chunk_base, "choices": [choice]})

    def encode(chunk: Any) -> str:
        """Ollama's split: the trace, then content or tool calls, each in a chunk of its own; the
        engine chunk's log probabilities ride on the first of them."""
        out = ""
        message = chunk.message
        logprobs = chat_logprobs(chunk.logprobs)
        if message.thinking:
            out += chunk_of({"content": "", "reasoning": message.thinking}, logprobs=logprobs)
            logprobs = None
        calls = _tool_calls(message)
        if calls:
            state["called"] = True
            out += chunk_of({"content": "", "tool_calls": calls}, logprobs=logprobs)
            logprobs = None
        if message.content or (not out and not chunk.done) or logprobs:
            out += chunk_of({"content": message.content}, logprobs=logprobs)
        if chunk.done:
            reason = "tool_calls" if state["called"] and chunk.done_reason == "stop" else chunk.done_reason
            out += chunk_of({}, reason)
        return out

    return await _completion_stream(result, encode, chunk_base, body.stream_options)


@router.post("/completions", responses=sse_responses())
async def completions(body: CompletionBody, request: Request) -> Response:
    engine: Engine = request.app.state.engine
    ident, created = f"cmpl-{random.randrange(999)}", int(time.time())
    base = {"id": ident, "object": "text_completion", "created": created, "model": body.model,
            "system_fingerprint": "fp_ollama"}
    options = _options(body)
    wants = body.logprobs is not None
    offsets = CompletionOffsets(body.logprobs or 0)
    result = await in_thread(lambda: engine.generate(body.model, body.prompt, suffix=body.suffix,
                                                     options=options, stream=body.stream, logprobs=wants,
                                                     top_logprobs=body.logprobs if wants else None), request)
    if not body.stream:
        return JSONResponse({**base, "choices": [{"text": result.response, "index": 0,
                                                  "logprobs": offsets(result.logprobs),
                                                  "finish_reason": result.done_reason}], "usage": _usage(result)})

    def encode(chunk: Any) -> str:
        choice = {"text": chunk.response or "", "index": 0, "logprobs": offsets(chunk.logprobs),
                  "finish_reason": chunk.done_reason if chunk.done else None}
        return sse({**base, "choices": [choice]})

    return await _completion_stream(result, encode, base, body.stream_options)


@router.post("/embeddings")
async def embeddings(body: EmbeddingBody, request: Request) -> Response:
    engine: Engine = request.app.state.engine
    if body.input == []:
        raise InvalidRequest("invalid input")
    texts = [body.input] if isinstance(body.input, str) else body.input
    result = await in_thread(lambda: engine.embed(body.model, texts, dimensions=body.dimensions), request)

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
    record = await in_thread(lambda: engine.store.find(model))
    if record is None:
        raise NotFound(f'model "{model}" not found')
    return JSONResponse({"id": model, "object": "model", "created": int(record.modified_at.timestamp()),
                         "owned_by": record.name.namespace})
