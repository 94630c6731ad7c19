"""Server-sent events for the OpenAI-compatible routes: ``data: <json>`` frames over the engine's
streams, errors in OpenAI's envelope, and a closing frame (``[DONE]``) chosen by the route."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from fastapi.responses import StreamingResponse

from ..errors import OllamaMagicError
from .envelopes import openai_error_content
from .streaming import dumps, open_stream

SSE_MEDIA_TYPE = "text/event-stream"
DONE = "data: [DONE]\n\n"


def sse(obj: Any) -> str:
    return f"data: {dumps(obj)}\n\n"


def sse_error(exc: OllamaMagicError) -> str:
    return sse(openai_error_content(str(exc), exc.status_code))


async def sse_response(stream: Iterator[Any], encode: Callable[[Any], str],
                       closing: Callable[[], str] = lambda: DONE) -> StreamingResponse:
    """Relay ``stream`` as SSE, one ``encode``d frame per item, then ``closing()``. An error before the
    first item raises here (so it keeps its HTTP status); a later one becomes the last frame."""
    relay, first = await open_stream(stream, encode, sse_error)
    return StreamingResponse(relay.body(first, closing), media_type=SSE_MEDIA_TYPE)
