"""Serving the engine's blocking iterators from async routes.

Each ``next()`` runs in a worker thread so the event loop stays free. The first item is fetched
before the response starts, so errors that happen early (unknown model, bad option, a model that
will not load) still get their own HTTP status; later errors become a final error line. When the
client goes away, the stream is cancelled and decoding stops after the current token.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable, Iterator

import anyio
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..errors import OllamaMagicError

END = object()


def _next(iterator: Iterator[Any]) -> Any:
    try:
        return next(iterator)
    except StopIteration:
        return END


def dumps(obj: Any) -> str:
    """Compact JSON that line-splitting clients cannot cut in two (U+2028/9 and NEL escaped)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")


def to_json(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=True, by_alias=True)
    return obj


def native_error(exc: OllamaMagicError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status_code)


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await anyio.to_thread.run_sync(fn)


async def start_stream(iterator: Iterator[Any]) -> Any:
    """The first item (or END); errors are raised here, before any byte is sent."""
    return await anyio.to_thread.run_sync(_next, iterator)


async def relay(
    iterator: Iterator[Any], first: Any, encode: Callable[[Any], str], encode_error: Callable[[OllamaMagicError], str],
    closing: Callable[[], str] | None = None,
) -> AsyncIterator[str]:
    try:
        item = first
        while item is not END:
            yield encode(item)
            item = await anyio.to_thread.run_sync(_next, iterator, abandon_on_cancel=True)
        if closing is not None:
            yield closing()
    except OllamaMagicError as exc:
        yield encode_error(exc)
    finally:
        cancel = getattr(iterator, "cancel", None)
        if cancel is not None:
            cancel()  # decoding stops after the current token, even while a worker waits in next()
        close = getattr(iterator, "close", None)
        if close is not None:
            with anyio.CancelScope(shield=True):  # runs even when the client's disconnect cancelled us
                await anyio.to_thread.run_sync(close)  # hands the model back (keep_alive starts)


async def ndjson(call: Callable[[], Any], stream: bool) -> Response:
    """Run an engine call; one JSON object, or NDJSON lines flushed one by one."""
    try:
        result = await in_thread(call)
        if not stream:
            return JSONResponse(to_json(result))
        first = await start_stream(result)
    except OllamaMagicError as exc:
        return native_error(exc)
    lines = relay(result, first, lambda item: dumps(to_json(item)) + "\n", lambda exc: dumps({"error": str(exc)}) + "\n")
    return StreamingResponse(lines, media_type="application/x-ndjson")
