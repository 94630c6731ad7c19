"""Anthropic's Messages API (``POST /v1/messages`` and ``/v1/messages/count_tokens``) as Ollama maps it
onto its chat, so clients written for Claude (the ``anthropic`` SDKs, Claude Code) run on local models.

A request becomes one ``Engine.chat`` call, the one ``/api/chat`` makes: ``system`` becomes a system
message, content blocks become messages (``tool_result`` blocks tool messages before the user's text,
``tool_use`` blocks the assistant's tool calls, ``thinking`` blocks its trace, base64 images its
images), ``max_tokens``/``temperature``/``top_p``/``top_k``/``stop_sequences`` its options,
``tools``/``tool_choice`` its tools, ``thinking`` its ``think``. The reply comes back as a ``message``
(thinking, text and tool_use blocks) or as Anthropic's server-sent events. Errors use Anthropic's
envelope (``envelopes.py``), mid-stream ones an ``event: error``.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..engine import Engine
from ..engine.capabilities import capabilities
from ..engine.images import from_base64
from ..engine.toolcalls import tool_call_id
from ..errors import InvalidRequest, OllamaMagicError
from .anthropic_schemas import (CountTokensBody, ImageBlock, ImageSource, MessageParam, MessageResponse, MessagesBody,
                                RedactedThinkingBlock, TextBlock, ThinkingBlock, TokenCount, ToolResultBlock,
                                ToolUseBlock)
from .envelopes import anthropic_error_content
from .openai_api import think_from_effort
from .schemas import SSE, anthropic_responses
from .sse import SSE_MEDIA_TYPE
from .streaming import dumps, in_thread, open_stream

router = APIRouter(prefix="/v1", tags=["anthropic"], responses=anthropic_responses())


# ---- request -> Engine.chat arguments ----------------------------------------------------------------


def _image(source: ImageSource) -> bytes:
    if source.type != "base64" or not source.data:
        raise InvalidRequest("image URLs are not currently supported, please use base64 encoded data instead")
    return from_base64(source.data)  # bytes: the engine reads no paths for HTTP


def _tool_result(block: ToolResultBlock) -> dict[str, Any]:
    texts: list[str] = []
    images: list[bytes] = []
    if isinstance(block.content, str):
        texts.append(block.content)
    for part in block.content if isinstance(block.content, list) else []:
        if isinstance(part, TextBlock):
            texts.append(part.text)
        else:
            images.append(_image(part.source))
    message: dict[str, Any] = {"role": "tool", "content": "".join(texts), "tool_call_id": block.tool_use_id}
    if images:
        message["images"] = images
    return message


def _messages(message: MessageParam) -> list[dict[str, Any]]:
    """One Anthropic message as native ones (Ollama's ``convertMessage``): a user turn's tool results
    come first, as tool messages, then its text and images; an assistant turn is one message with
    its text, trace and tool calls."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    text: list[str] = []
    images: list[bytes] = []
    calls: list[dict[str, Any]] = []
    thinking = ""
    results: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ImageBlock):
            images.append(_image(block.source))
        elif isinstance(block, ToolUseBlock):
            calls.append({"id": block.id, "function": {"index": len(calls), "name": block.name,
                                                       "arguments": block.input}})
        elif isinstance(block, ToolResultBlock):
            results.append(_tool_result(block))
        elif isinstance(block, ThinkingBlock):
            thinking = block.thinking
        elif not isinstance(block, RedactedThinkingBlock):  # pragma: no cover - the schema lists every kind
            raise InvalidRequest(f"unsupported content block {block.type!r}")
    native: list[dict[str, Any]] = []
    if text or images or calls or thinking:
        native.append({"role": message.role, "content": "".join(text),
                       **({"images": images} if images else {}), **({"tool_calls": calls} if calls else {}),
                       **({"thinking": thinking} if thinking else {})})
    return [*results, *native] if message.role == "user" else [*native, *results]


def _chat_messages(body: CountTokensBody) -> list[dict[str, Any]]:
    native: list[dict[str, Any]] = []
    system = body.system if isinstance(body.system, str) else "".join(b.text for b in body.system or [])
    if system:
        native.append({"role": "system", "content": system})
    for message in body.messages:
        native.extend(_messages(message))
    if not any(m["role"] != "system" for m in native):  # else the engine would only load the model
        raise InvalidRequest("messages: all messages must have non-empty content")
    return native


def _tools(body: CountTokensBody) -> list[dict[str, Any]] | None:
    tools = []
    for tool in body.tools or []:
        if tool.type not in (None, "custom"):
            raise InvalidRequest(f"tool type {tool.type!r} is not supported: only custom tools (name, input_schema)")
        tools.append({"type": "function", "function": {"name": tool.name, "description": tool.description or "",
                                                       "parameters": tool.input_schema}})
    return tools or None


def _tool_choice(body: CountTokensBody) -> Any:
    """Anthropic's choice as the engine's (OpenAI's words): any -> required, tool -> that function."""
    choice = body.tool_choice
    if choice is None or choice.type == "auto":
        return None
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest('tool_choice type "tool" needs a name')
        return {"type": "function", "function": {"name": choice.name}}
    return {"any": "required", "none": "none"}[choice.type]


def _requested_think(body: CountTokensBody) -> bool | str | None:
    if body.thinking is not None and body.thinking.type in ("enabled", "disabled"):
        return body.thinking.type == "enabled"
    effort = body.output_config.effort if body.output_config else None
    return think_from_effort(effort.strip().lower() if effort else None)


def _think(engine: Engine, body: CountTokensBody) -> bool | str | None:
    """``thinking`` as ``think``, relaxed as Ollama relaxes it for Anthropic's clients: asking a model
    that cannot think to think is not an error here (Claude Code asks every model), it just does not."""
    think = _requested_think(body)
    if think not in (None, False):
        record = engine.store.find(body.model)
        if record is not None and "thinking" not in capabilities(record):
            return None
    return think


def _chat_arguments(engine: Engine, body: CountTokensBody) -> tuple[Any, ...]:
    """The messages, tools, tool choice and think setting ``Engine.chat`` takes; called in a thread, as
    decoding base64 images (bodies up to the size limit) and looking the model up would stall the
    event loop and every request on it."""
    return _chat_messages(body), _tools(body), _tool_choice(body), _think(engine, body)


def _options(body: MessagesBody) -> dict[str, Any]:
    """Only what the request sets: the model's own parameters hold otherwise (as Ollama's mapping)."""
    options: dict[str, Any] = {"num_predict": body.max_tokens}
    for key, value in (("temperature", body.temperature), ("top_p", body.top_p), ("top_k", body.top_k)):
        if value is not None:
            options[key] = value
    if body.stop_sequences:
        options["stop"] = body.stop_sequences
    return options


# ---- Engine.chat reply -> Anthropic's shapes ---------------------------------------------------------


def _message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def _tool_use(call: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id or tool_call_id(), "name": call.function.name,
            "input": dict(call.function.arguments)}


def _stop(final: Any, called: bool, requested: list[str] | None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of a finished reply. Only a stop string of the request's
    ``stop_sequences`` is named, as Anthropic's API names it; one from the model's own parameters
    (a Modelfile's ``PARAMETER stop``) ended the turn as the model's end would."""
    if called:
        return "tool_use", None
    if final.done_reason == "length":
        return "max_tokens", None
    sequence = getattr(final, "stop_sequence", None)
    if sequence and sequence in (requested or ()):
        return "stop_sequence", sequence
    return "end_turn", None


def _usage(final: Any) -> dict[str, int]:
    return {"input_tokens": final.prompt_eval_count or 0, "output_tokens": final.eval_count or 0}


def _message(ident: str, model: str, result: Any, stops: list[str] | None) -> dict[str, Any]:
    reply = result.message
    content: list[dict[str, Any]] = []
    if reply.thinking:
        content.append({"type": "thinking", "thinking": reply.thinking, "signature": ""})
    if reply.content:
        content.append({"type": "text", "text": reply.content})
    content.extend(_tool_use(call) for call in reply.tool_calls or [])
    reason, sequence = _stop(result, bool(reply.tool_calls), stops)
    return {"id": ident, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": reason, "stop_sequence": sequence, "usage": _usage(result)}


def event(kind: str, **data: Any) -> str:
    return f"event: {kind}\ndata: {dumps({'type': kind, **data})}\n\n"


class _Events:
    """Chat chunks in, Anthropic's stream out: ``message_start`` (and a ``ping``), then per content
    block ``content_block_start`` / ``content_block_delta``s / ``content_block_stop``, then
    ``message_delta`` (stop reason, usage) and ``message_stop``."""

    def __init__(self, ident: str, model: str, stops: list[str] | None) -> None:
        self.ident, self.model, self.stops = ident, model, stops
        self.started = False
        self.index = 0
        self.open: str | None = None  # the kind of block now open: "thinking", "text" or None
        self.called = False

    def _start(self) -> str:
        message = {"id": self.ident, "type": "message", "role": "assistant", "model": self.model, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return event("message_start", message=message) + event("ping")

    def _close(self) -> str:
        if self.open is None:
            return ""
        out = event("content_block_stop", index=self.index)
        self.open, self.index = None, self.index + 1
        return out

    def _delta(self, kind: str, block: dict[str, Any], delta: dict[str, Any]) -> str:
        out = ""
        if self.open != kind:
            out += self._close() + event("content_block_start", index=self.index, content_block=block)
            self.open = kind
        return out + event("content_block_delta", index=self.index, delta=delta)

    def chunk(self, chunk: Any) -> str:
        out = ""
        if not self.started:
            out, self.started = self._start(), True
        message = chunk.message
        if message.thinking:
            out += self._delta("thinking", {"type": "thinking", "thinking": "", "signature": ""},
                               {"type": "thinking_delta", "thinking": message.thinking})
        if message.content:
            out += self._delta("text", {"type": "text", "text": ""}, {"type": "text_delta", "text": message.content})
        for call in message.tool_calls or []:
            out += self._close()
            block = _tool_use(call)
            arguments = json.dumps(block["input"])
            out += event("content_block_start", index=self.index, content_block={**block, "input": {}})
            out += event("content_block_delta", index=self.index,
                         delta={"type": "input_json_delta", "partial_json": arguments})
            out += event("content_block_stop", index=self.index)
            self.index += 1
            self.called = True
        if chunk.done:
            reason, sequence = _stop(chunk, self.called, self.stops)
            out += self._close()
            out += event("message_delta", delta={"stop_reason": reason, "stop_sequence": sequence}, usage=_usage(chunk))
            out += event("message_stop")
        return out


def _error_event(exc: OllamaMagicError) -> str:
    """A failure after the stream started: Anthropic's ``event: error`` (its status is 200 by then)."""
    return f"event: error\ndata: {dumps(anthropic_error_content(str(exc), exc.status_code))}\n\n"


# ---- routes ----------------------------------------------------------------------------------------


def _documented(model: type, streams: bool) -> dict[int | str, dict[str, Any]]:
    """A 200 of ``model``'s schema (and, for a stream, server-sent events)."""
    words = "the message, or (stream) server-sent events ending with message_stop" if streams else "the count"
    return {200: {"model": model, "description": words, **({"content": {SSE: {"schema": {"type": "string"}}}} if streams else {})}}


@router.post("/messages", responses=_documented(MessageResponse, streams=True))
async def messages(body: MessagesBody, request: Request) -> Response:
    """Anthropic's Messages API on the engine's chat."""
    engine: Engine = request.app.state.engine
    native, tools, tool_choice, think = await in_thread(lambda: _chat_arguments(engine, body))
    options = _options(body)
    fmt = body.output_config.format.schema_ if body.output_config and body.output_config.format else None
    result = await in_thread(lambda: engine.chat(body.model, native, tools=tools, options=options, stream=body.stream,
                                                 think=think, tool_choice=tool_choice, format=fmt), request)
    ident = _message_id()
    if not body.stream:
        return JSONResponse(_message(ident, body.model, result, body.stop_sequences))
    events = _Events(ident, body.model, body.stop_sequences)
    stream, first = await open_stream(result, events.chunk, _error_event)
    return StreamingResponse(stream.body(first), media_type=SSE_MEDIA_TYPE,
                             headers={"Cache-Control": "no-cache"})


@router.post("/messages/count_tokens", responses=_documented(TokenCount, streams=False))
async def count_tokens(body: CountTokensBody, request: Request) -> Response:
    """The prompt tokens the same request to ``/v1/messages`` would take (its ``usage.input_tokens``),
    counted with the model's tokenizer on the prompt the chat renders; nothing is generated."""
    engine: Engine = request.app.state.engine
    native, tools, tool_choice, think = await in_thread(lambda: _chat_arguments(engine, body))
    count = await in_thread(lambda: engine.count_tokens(body.model, native, tools=tools, think=think,
                                                        tool_choice=tool_choice), request)
    return JSONResponse({"input_tokens": count})
