"""Request bodies before the routes see them: read as JSON whatever their Content-Type, and bounded.

Both are pure ASGI (no ``BaseHTTPMiddleware``), so streaming routes still see client disconnects.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import envconfig
from .envelopes import send_error

DEFAULT_MAX_BODY = envconfig.max_body.default  # 100 MiB: several base64 images in one chat request
BLOB_PREFIX = "/api/blobs/"  # uploads are streamed to disk as they come: no limit, no JSON


def max_body_from_env() -> int:
    """``OLLAMA_MAGIC_MAX_BODY`` in bytes (default 100 MiB)."""
    return envconfig.max_body()


class JSONBodies:
    """Read every API body as JSON whatever its Content-Type, as Ollama does: ``curl -d '{...}'``
    sends ``application/x-www-form-urlencoded``, and the seed document's examples rely on it.
    (This is why a foreign ``Origin`` must be refused outright: see ``guards.OriginGuard``.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(BLOB_PREFIX):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = dict(scope, headers=[*headers, (b"content-type", b"application/json")])
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a body over ``limit`` bytes, decided while it streams in: a declared Content-Length over
    the limit is refused before a byte is read, and a chunked body as soon as the count passes it, so
    no more than ``limit`` is ever buffered. The route then sees a disconnect and its answer is dropped."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _message(self) -> str:
        return f"request body too large: the limit is {self.limit} bytes (OLLAMA_MAGIC_MAX_BODY)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(BLOB_PREFIX):
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await send_error(scope, send, self._message(), 413)
            return
        state: dict[str, Any] = {"received": 0, "refused": False, "started": False}

        async def bounded_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.limit:
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await send_error(scope, send, self._message(), 413)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return  # the 413 has been sent; whatever the route answers now goes nowhere
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            if not state["refused"]:
                raise
            # the route saw the disconnect we reported and gave up; the client already has its 413
