"""``POST /v1/responses``: OpenAI's Responses API, stateless as Ollama serves it.

A request (``input`` as text or items, ``instructions``, ``tools``, ``reasoning``, ``text.format``,
``max_output_tokens``) becomes one Engine chat; the reply becomes ``output`` items (a reasoning item,
function calls, the message). Streaming sends Ollama's event sequence: ``response.created``,
``response.in_progress``, then per item ``output_item.added`` / deltas / ``output_item.done``, and
``response.completed``. ``previous_response_id`` is refused: nothing is stored.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Optional, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from ..engine import Engine
from ..errors import InvalidRequest, OllamaMagicError
from .openai_api import think_from_effort
from .schemas import openai_responses, sse_responses
from .sse import SSE_MEDIA_TYPE
from .streaming import dumps, in_thread, open_stream

router = APIRouter(prefix="/v1", tags=["openai"], responses=openai_responses())


class ResponsesBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: Union[str, list[dict[str, Any]]] = ""
    instructions: Optional[str] = None
    tools: Optional[list[dict[str, Any]]] = None
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    stream: bool = False
    max_output_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    reasoning: Optional[dict[str, Any]] = None
    text: Optional[dict[str, Any]] = None
    truncation: Optional[str] = None
    previous_response_id: Optional[str] = None


def _text_of(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "output_text", "text"):
                parts.append(part.get("text") or "")
            elif kind in ("input_image", "input_file"):
                raise InvalidRequest(f"{kind} parts are not supported by this server yet")
            else:
                raise InvalidRequest(f"unsupported content part type {kind!r}")
        return "".join(parts)
    raise InvalidRequest("invalid input content")


def to_messages(body: ResponsesBody) -> list[dict[str, Any]]:
    """Input items as native chat messages (function calls and their outputs included)."""
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        messages.append({"role": "user", "content": body.input})
        return messages
    thinking = ""
    for item in body.input:
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            role = "system" if role == "developer" else role
            messages.append({"role": role, "content": _text_of(item.get("content")),
                             **({"thinking": thinking} if thinking and role == "assistant" else {})})
            thinking = ""
        elif kind == "reasoning":
            thinking += "".join(s.get("text") or "" for s in item.get("summary") or [])
        elif kind == "function_call":
            try:
                arguments = json.loads(item.get("arguments") or "{}")
            except ValueError:
                raise InvalidRequest("invalid function_call arguments") from None
            call = {"id": item.get("call_id") or "", "function": {"name": item.get("name") or "", "arguments": arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not last.get("content") and last.get("tool_calls"):
                call["function"]["index"] = len(last["tool_calls"])
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call],
                                 **({"thinking": thinking} if thinking else {})})
                thinking = ""
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "content": output if isinstance(output, str) else _text_of(output),
                             "tool_call_id": item.get("call_id") or ""})
        else:
            raise InvalidRequest(f"unsupported input item type {kind!r}")
    return messages


def _tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    native = []
    for tool in tools or []:
        if tool.get("type") != "function":
            raise InvalidRequest(f"tool type {tool.get('type')!r} is not supported: only function tools")
        native.append({"type": "function", "function": {"name": tool.get("name"), "description": tool.get("description") or "",
                                                        "parameters": tool.get("parameters") or {"type": "object"}}})
    return native or None


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _format(text: dict[str, Any] | None) -> Any:
    fmt = (text or {}).get("format") or {}
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest("text.format json_schema needs a schema")
        return fmt["schema"]
    raise InvalidRequest(f"unknown text.format type {kind!r}")


def _options(body: ResponsesBody) -> dict[str, Any]:
    options: dict[str, Any] = {"temperature": 1.0 if body.temperature is None else body.temperature,
                               "top_p": 1.0 if not body.top_p else body.top_p}
    if body.max_output_tokens is not None:
        options["num_predict"] = body.max_output_tokens
    return options


def _usage(final: Any) -> dict[str, Any]:
    prompt, completion = final.prompt_eval_count or 0, final.eval_count or 0
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [_output_text(text)] if status == "completed" else []}


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}],
            "encrypted_content": text}


def _call_item(item_id: str, call: Any, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id or "",
            "name": call.function.name, "arguments": json.dumps(dict(call.function.arguments)) if status == "completed" else ""}


class _Response:
    """The response object, echoing the request as OpenAI does."""

    def __init__(self, body: ResponsesBody) -> None:
        self.body = body
        self.id = f"resp_{random.randrange(10**6):06d}"
        self.created = int(time.time())

    def object(self, status: str, output: list[Any], usage: dict[str, Any] | None) -> dict[str, Any]:
        body = self.body
        reasoning = None
        if body.reasoning and (body.reasoning.get("effort") or body.reasoning.get("summary")):
            reasoning = {"effort": body.reasoning.get("effort"), "summary": body.reasoning.get("summary")}
        return {
            "id": self.id, "object": "response", "created_at": self.created,
            "completed_at": int(time.time()) if status == "completed" else None, "status": status,
            "incomplete_details": None, "model": body.model, "previous_response_id": None,
            "instructions": body.instructions, "output": output, "error": None, "tools": body.tools or [],
            "tool_choice": body.tool_choice or "auto", "truncation": body.truncation or "disabled",
            "parallel_tool_calls": True, "text": {"format": (body.text or {}).get("format") or {"type": "text"}},
            "top_p": 1.0 if body.top_p is None else body.top_p, "presence_penalty": 0, "frequency_penalty": 0,
            "top_logprobs": 0, "temperature": 1.0 if body.temperature is None else body.temperature,
            "reasoning": reasoning, "usage": usage, "max_output_tokens": body.max_output_tokens,
            "max_tool_calls": None, "store": False, "background": False, "service_tier": "default",
            "metadata": {}, "safety_identifier": None, "prompt_cache_key": None,
        }


class _Events:
    """Chat chunks in, Responses stream events out (Ollama's ResponsesStreamConverter)."""

    def __init__(self, response: _Response) -> None:
        self.response = response
        self.sequence = 0
        self.index = 0
        self.done_items: list[dict[str, Any]] = []
        self.reasoning_id: str | None = None
        self.reasoning = ""
        self.message_id: str | None = None
        self.text = ""

    def event(self, kind: str, **data: Any) -> str:
        data = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return f"event: {kind}\ndata: {dumps(data)}\n\n"

    def start(self) -> str:
        empty = self.response.object("in_progress", [], None)
        return self.event("response.created", response=empty) + self.event("response.in_progress", response=empty)

    def _finish_reasoning(self) -> str:
        if self.reasoning_id is None:
            return ""
        item = _reasoning_item(self.reasoning_id, self.reasoning)
        out = self.event("response.reasoning_summary_text.done", item_id=self.reasoning_id, output_index=self.index,
                         summary_index=0, text=self.reasoning)
        out += self.event("response.output_item.done", output_index=self.index, item=item)
        self.done_items.append(item)
        self.reasoning_id, self.reasoning = None, ""
        self.index += 1
        return out

    def _finish_message(self) -> str:
        if self.message_id is None:
            return ""
        item = _message_item(self.message_id, self.text)
        out = self.event("response.output_text.done", item_id=self.message_id, output_index=self.index,
                         content_index=0, text=self.text, logprobs=[])
        out += self.event("response.content_part.done", item_id=self.message_id, output_index=self.index,
                          content_index=0, part=_output_text(self.text))
        out += self.event("response.output_item.done", output_index=self.index, item=item)
        self.done_items.append(item)
        self.message_id, self.text = None, ""
        self.index += 1
        return out

    def chunk(self, chunk: Any) -> str:
        out = ""
        message = chunk.message
        if message.thinking:
            if self.reasoning_id is None:
                self.reasoning_id = f"rs_{self.response.id[5:]}_{self.index}"
                out += self.event("response.output_item.added", output_index=self.index,
                                  item={"id": self.reasoning_id, "type": "reasoning", "summary": []})
            self.reasoning += message.thinking
            out += self.event("response.reasoning_summary_text.delta", item_id=self.reasoning_id,
                              output_index=self.index, summary_index=0, delta=message.thinking)
        for call in message.tool_calls or []:
            out += self._finish_reasoning() + self._finish_message()
            item_id = f"fc_{self.response.id[5:]}_{self.index}"
            item = _call_item(item_id, call)
            out += self.event("response.output_item.added", output_index=self.index, item=_call_item(item_id, call, "in_progress"))
            out += self.event("response.function_call_arguments.delta", item_id=item_id, output_index=self.index,
                              delta=item["arguments"])
            out += self.event("response.function_call_arguments.done", item_id=item_id, output_index=self.index,
                              arguments=item["arguments"])
            out += self.event("response.output_item.done", output_index=self.index, item=item)
            self.done_items.append(item)
            self.index += 1
        if message.content:
            out += self._finish_reasoning()
            if self.message_id is None:
                self.message_id = f"msg_{self.response.id[5:]}_{self.index}"
                out += self.event("response.output_item.added", output_index=self.index,
                                  item=_message_item(self.message_id, "", "in_progress"))
                out += self.event("response.content_part.added", item_id=self.message_id, output_index=self.index,
                                  content_index=0, part=_output_text(""))
            self.text += message.content
            out += self.event("response.output_text.delta", item_id=self.message_id, output_index=self.index,
                              content_index=0, delta=message.content, logprobs=[])
        if chunk.done:
            out += self._finish_reasoning() + self._finish_message()
            out += self.event("response.completed",
                              response=self.response.object("completed", self.done_items, _usage(chunk)))
        return out


def _output(response: _Response, result: Any) -> list[dict[str, Any]]:
    message = result.message
    output = []
    if message.thinking:
        output.append(_reasoning_item(f"rs_{response.id[5:]}", message.thinking))
    for i, call in enumerate(message.tool_calls or []):
        output.append(_call_item(f"fc_{response.id[5:]}_{i}", call))
    if not message.tool_calls:
        output.append(_message_item(f"msg_{response.id[5:]}", message.content or ""))
    return output


@router.post("/responses", responses=sse_responses())
async def responses(body: ResponsesBody, request: Request) -> Response:
    engine: Engine = request.app.state.engine
    response = _Response(body)
    if body.previous_response_id:
        raise InvalidRequest("previous_response_id is not supported: this server stores no responses; "
                             "send the whole conversation as input items")
    messages, tools, fmt = to_messages(body), _tools(body.tools), _format(body.text)
    think = think_from_effort((body.reasoning or {}).get("effort"))
    call = lambda: engine.chat(body.model, messages, tools=tools, format=fmt, options=_options(body),  # noqa: E731
                               stream=body.stream, think=think, tool_choice=_tool_choice(body.tool_choice))
    result = await in_thread(call, request)  # errors answer in OpenAI's envelope (the app's handlers)
    if not body.stream:
        return JSONResponse(response.object("completed", _output(response, result), _usage(result)))
    events = _Events(response)
    state = {"started": False}

    def encode(chunk: Any) -> str:
        out = "" if state["started"] else events.start()
        state["started"] = True
        return out + events.chunk(chunk)

    def encode_error(exc: OllamaMagicError) -> str:
        failed = response.object("failed", events.done_items, None)
        failed["error"] = {"code": "server_error", "message": str(exc)}
        return events.event("response.failed", response=failed)

    stream, first = await open_stream(result, encode, encode_error)
    return StreamingResponse(stream.body(first), media_type=SSE_MEDIA_TYPE)
