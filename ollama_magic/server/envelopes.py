"""The error envelopes and the handlers that produce them.

Ollama's native routes answer ``{"error": "..."}``; its OpenAI-compatible ones answer
``{"error": {"message", "type", "param", "code"}}``; Anthropic's Messages API (``/v1/messages``)
answers ``{"type": "error", "error": {"type", "message"}}``. Which one a failure gets depends only on
the path, so routes raise our exceptions (``ollama_magic.errors``) and never build an error response
themselves: one handler per kind of failure picks the envelope here. New routes under ``/v1`` get
OpenAI's envelope (under ``/v1/messages`` Anthropic's), every other path the native one, without a
line of their own.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from ..errors import OllamaMagicError
from .schemas import RERANK_COMPATIBLE_PATHS

log = logging.getLogger("ollama_magic")

OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "invalid_request_error", 503: "server_overloaded"}


#: outside /v1, the rerank paths llama-server serves and Cohere's SDK posts to (``rerank_api``)
OPENAI_SHAPED_PATHS = tuple(path for path in RERANK_COMPATIBLE_PATHS if not path.startswith(OPENAI_PREFIX))

#: Anthropic's error types by status (its API answers 529 when overloaded; ours says 503, as Ollama's)
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    503: "overloaded_error", 529: "overloaded_error"}
ANTHROPIC_PREFIX = "/v1/messages"


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX) or path in OPENAI_SHAPED_PATHS


def is_anthropic_path(path: str) -> bool:
    return path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/")


def anthropic_error_content(message: str, status: int) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def openai_error_content(message: str, status: int) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def error_content(path: str, message: str, status: int) -> dict[str, Any]:
    """The body of an error answer on ``path``: Anthropic's under /v1/messages, OpenAI's elsewhere
    under /v1, Ollama's everywhere else."""
    if is_anthropic_path(path):
        return anthropic_error_content(message, status)
    return openai_error_content(message, status) if is_openai_path(path) else {"error": message}


def error_response(path: str, message: str, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_content(path, message, status), status_code=status, headers=dict(headers or {}))


def native_error(exc: OllamaMagicError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status_code)


async def send_error(scope: Scope, send: Send, message: str, status: int) -> None:
    """Answer from pure-ASGI middleware (before any route runs) in the path's envelope."""
    await error_response(scope.get("path", ""), message, status)(scope, _no_receive, send)


async def _no_receive() -> dict[str, Any]:  # a JSONResponse never reads the request
    return {"type": "http.disconnect"}


def validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if errors and errors[0].get("type") == "missing" and errors[0].get("loc") == ("body",):
        return "missing request body"
    if errors and errors[0].get("type") == "json_invalid":
        return f"invalid JSON: {errors[0].get('ctx', {}).get('error', 'malformed body')}"
    return "; ".join(_field_message(e) for e in errors)


def _field_message(error: Mapping[str, Any]) -> str:
    where = tuple(error.get("loc", ()))[1:]
    if where == ("model",) and error.get("type") in ("missing", "string_too_short"):
        return "model is required"  # Ollama's words (chat, show, push...) for a missing or empty model
    return f"{'.'.join(str(p) for p in where) or 'body'}: {error.get('msg')}"


def install_error_handlers(app: FastAPI) -> None:
    """Every failure, expected or not, leaves as JSON in the path's envelope (never a plain-text 500)."""

    @app.exception_handler(OllamaMagicError)
    async def our_error(request: Request, exc: OllamaMagicError) -> JSONResponse:
        content = error_content(request.url.path, str(exc), exc.status_code)
        if is_openai_path(request.url.path):  # OpenAI's param / code / type, where an error names them
            content["error"].update(getattr(exc, "openai_fields", None) or {})
        return JSONResponse(content, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request.url.path, validation_message(exc), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return PlainTextResponse("404 page not found", status_code=404)  # Ollama's (gin's) exact answer
        return error_response(request.url.path, str(exc.detail).lower(), exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(request.url.path, f"internal error: {type(exc).__name__}: {exc}", 500)
