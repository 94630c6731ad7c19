"""``/v1/responses``: OpenAI's Responses API, stateful as OpenAI's (Ollama's is stateless).

A request (``input`` as text or items, ``instructions``, ``tools``, ``reasoning``, ``text.format``,
``max_output_tokens``) becomes one Engine chat; the reply becomes ``output`` items (a reasoning item,
function calls, the message). Streaming sends Ollama's event sequence: ``response.created``,
``response.in_progress``, then per item ``output_item.added`` / deltas / ``output_item.done``, and
``response.completed``.

``store`` (default true) keeps the response (``store/responses_store.py``); ``previous_response_id``
puts the stored response's full input and its output before the request's input (its
``instructions`` are not carried over, as OpenAI documents). ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` read and forget stored responses. A stream is stored when it
ends: ``completed``, ``failed`` (an engine error mid-stream, with what was produced) or ``cancelled``
(the client went away, with the text so far).
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
import time
from typing import Any, AsyncIterator, Literal, Optional, Union

import anyio
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from ..engine import Engine
from ..errors import InvalidRequest, NotFound, OllamaMagicError
from ..store.responses_store import ResponseStore, open_store
from .openai_api import think_from_effort
from .schemas import ModelNameField, openai_responses, sse_responses
from .sse import SSE_MEDIA_TYPE
from .streaming import dumps, in_thread, open_stream

log = logging.getLogger("ollama_magic")
router = APIRouter(prefix="/v1", tags=["openai"], responses=openai_responses())


class ResponsesBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: ModelNameField
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
    #: keep the response for GET and for a later previous_response_id (OpenAI's default: true)
    store: Optional[bool] = None
    previous_response_id: Optional[str] = None


class PreviousResponseNotFound(InvalidRequest):
    """OpenAI's answer to a ``previous_response_id`` it does not hold: a 400 naming the field."""

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Previous response with id '{response_id}' not found.")
        self.openai_fields = {"param": "previous_response_id", "code": "previous_response_not_found"}


class ResponseNotFound(NotFound):
    """OpenAI's 404 for a response id it does not hold (never stored, deleted, evicted, expired)."""

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id '{response_id}' not found.")
        self.openai_fields = {"type": "invalid_request_error"}


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


def input_items(given: Union[str, list[dict[str, Any]]], response_id: str = "") -> list[dict[str, Any]]:
    """The request's ``input`` as items, the form stored and listed by ``input_items``: text becomes one
    user message; a message's text content becomes its one text part. With ``response_id``, an item
    without an ``id`` gets one made from it (OpenAI lists every input item with an id)."""
    given = [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else given
    items = []
    for i, item in enumerate(given):
        item = dict(item)
        if "role" in item and not item.get("type"):
            item["type"] = "message"
        if item.get("type") == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        if response_id and not item.get("id"):
            item["id"] = f"{_ITEM_PREFIX.get(item.get('type'), 'item')}_{response_id[5:]}_in{i}"
        items.append(item)
    return items


_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def items_to_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``instructions`` (a system message) then ``items`` (input items, or a stored response's output
    items) as native chat messages: the one conversion for a request and for a stored chain."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    thinking = ""
    for item in items:
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

    def __init__(self, body: ResponsesBody, stored: bool = False) -> None:
        self.body = body
        self.id = f"resp_{secrets.token_hex(24)}"  # a stored id must not be guessable or collide
        self.created = int(time.time())
        self.stored = stored

    def object(self, status: str, output: list[Any], usage: dict[str, Any] | None) -> dict[str, Any]:
        body = self.body
        reasoning = None
        if body.reasoning and (body.reasoning.get("effort") or body.reasoning.get("summary")):
            reasoning = {"effort": body.reasoning.get("effort"), "summary": body.reasoning.get("summary")}
        return {
            "id": self.id, "object": "response", "created_at": self.created,
            "completed_at": int(time.time()) if status == "completed" else None, "status": status,
            "incomplete_details": None, "model": body.model, "previous_response_id": body.previous_response_id,
            "instructions": body.instructions, "output": output, "error": None, "tools": body.tools or [],
            "tool_choice": body.tool_choice or "auto", "truncation": body.truncation or "disabled",
            "parallel_tool_calls": True, "text": {"format": (body.text or {}).get("format") or {"type": "text"}},
            "top_p": 1.0 if body.top_p is None else body.top_p, "presence_penalty": 0, "frequency_penalty": 0,
            "top_logprobs": 0, "temperature": 1.0 if body.temperature is None else body.temperature,
            "reasoning": reasoning, "usage": usage, "max_output_tokens": body.max_output_tokens,
            "max_tool_calls": None, "store": self.stored, "background": False, "service_tier": "default",
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
        #: the response object the last event carried (completed or failed), None before the end
        self.final: dict[str, Any] | None = None

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
            self.final = self.response.object("completed", self.done_items, _usage(chunk))
            out += self.event("response.completed", response=self.final)
        return out

    def failed(self, exc: OllamaMagicError) -> str:
        self.final = self.response.object("failed", self.done_items, None)
        self.final["error"] = {"code": "server_error", "message": str(exc)}
        return self.event("response.failed", response=self.final)

    def cancelled(self) -> dict[str, Any]:
        """The response as it stood when the client went away: the finished items, then the message so
        far, ``incomplete`` (the cancel cut it, even where the engine's last chunk closed it)."""
        output = list(self.done_items)
        if self.message_id is not None:
            output.append(_message_item(self.message_id, self.text))
        if output and output[-1]["type"] == "message":
            output[-1] = {**output[-1], "status": "incomplete"}
        return self.response.object("cancelled", output, None)


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


#: seconds a store file that could not be opened is left alone before it is tried again (a lock
#: released, a disk freed, a permission fixed come back without a restart)
REOPEN_AFTER = 30.0


class _StoreSlot:
    """The app's store, opened at its first use (so a server that never stores creates no file) and
    closed with the app. A file that cannot be opened turns storing off (nothing is stored, nothing
    found) until ``REOPEN_AFTER`` seconds have passed, then the next use tries again. Opening may
    wait on another process's lock (the store's busy timeout), so it is called from a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: ResponseStore | None = None
        self._failed_at: float | None = None

    def get(self) -> ResponseStore | None:
        with self._lock:
            if self._store is None and (self._failed_at is None
                                        or time.monotonic() - self._failed_at >= REOPEN_AFTER):
                self._store = open_store()
                self._failed_at = None if self._store is not None else time.monotonic()
            return self._store

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
            if store is not None:
                store.close()


_slot_lock = threading.Lock()


def _slot(app: FastAPI) -> _StoreSlot:
    with _slot_lock:
        if not hasattr(app.state, "responses_slot"):
            app.state.responses_slot = _StoreSlot()
        return app.state.responses_slot


def responses_store(app: FastAPI) -> ResponseStore | None:
    """The app's store (see ``_StoreSlot``), or None while its file cannot be opened. It may wait on
    the file's lock: call it from a thread, never on the event loop."""
    return _slot(app).get()


def close_responses_store(app: FastAPI) -> None:
    """Close the app's store, when it was opened (the app is stopping); a later use opens it again."""
    _slot(app).close()


async def _store(app: FastAPI) -> ResponseStore | None:
    return await in_thread(lambda: responses_store(app))


def _keep(store: ResponseStore, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
    """Store a response; a write that fails (a full disk) costs the chain, never the answer."""
    try:
        store.put(response, items)
    except (sqlite3.Error, OSError) as exc:
        log.warning("response %s could not be stored: %s", response.get("id"), exc)


async def _stored(app: FastAPI, response_id: str) -> Any:
    store = await _store(app)
    return None if store is None else await in_thread(lambda: store.get(response_id))


@router.post("/responses", responses=sse_responses())
async def responses(body: ResponsesBody, request: Request) -> Response:
    engine: Engine = request.app.state.engine
    store = await _store(request.app)
    keep = store is not None and body.store is not False
    response = _Response(body, stored=keep)
    items = input_items(body.input, response.id)
    if body.previous_response_id:
        prior = await _stored(request.app, body.previous_response_id)
        if prior is None:
            raise PreviousResponseNotFound(body.previous_response_id)
        items = prior.input_items + prior.response.get("output", []) + items  # its instructions stay behind
    messages, tools, fmt = items_to_messages(body.instructions, items), _tools(body.tools), _format(body.text)
    think = think_from_effort((body.reasoning or {}).get("effort"))
    call = lambda: engine.chat(body.model, messages, tools=tools, format=fmt, options=_options(body),  # noqa: E731
                               stream=body.stream, think=think, tool_choice=_tool_choice(body.tool_choice))
    result = await in_thread(call, request)  # errors answer in OpenAI's envelope (the app's handlers)
    if not body.stream:
        whole = response.object("completed", _output(response, result), _usage(result))
        if keep:
            await in_thread(lambda: _keep(store, whole, items))
        return JSONResponse(whole)
    events = _Events(response)
    state: dict[str, Any] = {"started": False, "relay": None}

    def encode(chunk: Any) -> str:  # on the stream's own thread
        out = "" if state["started"] else events.start()
        state["started"] = True
        out += events.chunk(chunk)
        relay = state["relay"]
        # stored before response.completed goes out, as a client may chain at once; not when the relay
        # was stopped (the client left): then this is the engine ending the cancelled job
        if chunk.done and keep and not (relay is not None and relay.stop.is_set()):
            _keep(store, events.final, items)
        return out

    stream, first = await open_stream(result, encode, events.failed)
    state["relay"] = stream

    async def body_then_store() -> AsyncIterator[str]:
        """The events, then the response stored as the client last saw it: failed when an engine error
        ended the stream (completed is stored by ``encode``); cancelled (with the text so far) when the
        client went away (the engine ends a cancelled job with a plain stop, so its last chunk looks done)."""
        events_out = stream.body(first)
        ended = False
        try:
            async for piece in events_out:
                yield piece
            ended = True
        finally:
            with anyio.CancelScope(shield=True):
                await events_out.aclose()  # now, not at garbage collection: it cancels the job, joins the thread
                final = events.final
                if keep and not (ended and final is not None and final["status"] == "completed"):
                    kept = final if ended and final is not None else events.cancelled()
                    await in_thread(lambda: _keep(store, kept, items))

    return StreamingResponse(body_then_store(), media_type=SSE_MEDIA_TYPE)


# ---- stored responses ---------------------------------------------------------------------------


class ResponseObject(BaseModel):
    """A stored response as ``POST /v1/responses`` returned it (OpenAI's Response object)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "failed", "cancelled", "incomplete", "in_progress"]
    model: str
    instructions: Optional[str] = None
    previous_response_id: Optional[str] = None
    output: list[dict[str, Any]]
    usage: Optional[dict[str, Any]] = None
    store: bool


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response"]
    deleted: Literal[True]


class ResponseItemList(BaseModel):
    """One page of a stored response's input items (OpenAI's list shape)."""

    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: Optional[str]
    last_id: Optional[str]
    has_more: bool


@router.get("/responses/{response_id}", responses={200: {"model": ResponseObject}})
async def retrieve_response(response_id: str, request: Request) -> JSONResponse:
    stored = await _stored(request.app, response_id)
    if stored is None:
        raise ResponseNotFound(response_id)
    return JSONResponse(stored.response)


@router.delete("/responses/{response_id}", responses={200: {"model": ResponseDeleted}})
async def delete_response(response_id: str, request: Request) -> JSONResponse:
    store = await _store(request.app)
    if store is None or not await in_thread(lambda: store.delete(response_id)):
        raise ResponseNotFound(response_id)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


@router.get("/responses/{response_id}/input_items", responses={200: {"model": ResponseItemList}})
async def list_input_items(response_id: str, request: Request,
                           limit: int = Query(20, ge=1, le=100, description="items per page, 1 to 100"),
                           order: Literal["asc", "desc"] = Query("desc", description="desc: the newest first"),
                           after: Optional[str] = Query(None, description="the id of the item this page follows"),
                           include: Optional[list[str]] = Query(None, description="accepted and ignored")
                           ) -> JSONResponse:
    """Every input item the response was generated from: the chain's earlier inputs and outputs, then
    its own input (``instructions`` are not items)."""
    stored = await _stored(request.app, response_id)
    if stored is None:
        raise ResponseNotFound(response_id)
    items = stored.input_items if order == "asc" else stored.input_items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return JSONResponse({"object": "list", "data": page, "first_id": page[0].get("id") if page else None,
                         "last_id": page[-1].get("id") if page else None, "has_more": len(items) > limit})
