"""The FastAPI application: the Engine behind Ollama's native routes and the OpenAI-compatible ones."""

from __future__ import annotations

import os
import re
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from .. import __version__
from ..engine import Engine
from . import ollama_api, openai_api, responses_api

#: Ollama's default CORS allow-list: local pages, apps and editor webviews.
DEFAULT_ORIGINS = (
    r"https?://(localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])(:\d+)?",
    r"app://.*", r"file://.*", r"tauri://.*", r"vscode-webview://.*", r"vscode-file://.*",
)


def _origin_regex(extra: str | None) -> str:
    patterns = list(DEFAULT_ORIGINS)
    for origin in (extra or "").split(","):
        origin = origin.strip()
        if origin:
            patterns.append(".*" if origin == "*" else re.escape(origin).replace(r"\*", ".*"))
    return "^(" + "|".join(patterns) + ")$"


class BearerAuth(BaseHTTPMiddleware):
    """When an API key is configured, every request must carry ``Authorization: Bearer <key>``."""

    def __init__(self, app, api_key: str) -> None:  # noqa: ANN001
        super().__init__(app)
        self.api_key = api_key

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method != "OPTIONS":
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not secrets.compare_digest(token.encode(), self.api_key.encode()):
                return JSONResponse({"error": "unauthorized: send Authorization: Bearer <api key>"}, status_code=401)
        return await call_next(request)


class JSONBodies:
    """Read every API body as JSON whatever its Content-Type, as Ollama does: ``curl -d '{...}'``
    sends ``application/x-www-form-urlencoded``, and the seed document's examples rely on it."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http" and not scope["path"].startswith("/api/blobs/"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = dict(scope, headers=[*headers, (b"content-type", b"application/json")])
        await self.app(scope, receive, send)


def _operation_id(route: APIRoute) -> str:
    """FastAPI's default (name, path, method), with every method of the route in it."""
    methods = "_".join(sorted(m.lower() for m in route.methods or ()))
    return re.sub(r"\W", "_", f"{route.name}{route.path_format}") + f"_{methods}"


def create_app(engine: Engine, *, api_key: str | None = None, origins: str | None = None) -> FastAPI:
    """Build the app. ``api_key`` defaults to $OLLAMA_MAGIC_API_KEY, ``origins`` to $OLLAMA_ORIGINS."""
    app = FastAPI(
        generate_unique_id_function=_operation_id,
        title="ollama-magic",
        version=__version__,
        description="Ollama's REST API and its OpenAI-compatible endpoints, served by an in-process llama.cpp engine.",
    )
    app.state.engine = engine
    app.include_router(ollama_api.router)
    app.include_router(openai_api.router)
    app.include_router(responses_api.router)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if errors and errors[0].get("type") == "missing" and errors[0].get("loc") == ("body",):
            message = "missing request body"
        elif errors and errors[0].get("type") == "json_invalid":
            message = f"invalid JSON: {errors[0].get('ctx', {}).get('error', 'malformed body')}"
        else:
            message = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}" for e in errors
            )
        if request.url.path.startswith("/v1/"):
            return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                           "code": None}}, status_code=400)
        return JSONResponse({"error": message}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return PlainTextResponse("404 page not found", status_code=404)
        return JSONResponse({"error": str(exc.detail).lower()}, status_code=exc.status_code, headers=exc.headers)

    api_key = api_key if api_key is not None else os.environ.get("OLLAMA_MAGIC_API_KEY") or None
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)
    app.add_middleware(JSONBodies)
    app.add_middleware(
        CORSMiddleware,
        allow_origin_regex=_origin_regex(origins if origins is not None else os.environ.get("OLLAMA_ORIGINS")),
        allow_methods=["*"],
        allow_headers=["Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With", "OpenAI-Beta",
                       "x-stainless-arch", "x-stainless-lang", "x-stainless-os", "x-stainless-package-version",
                       "x-stainless-retry-count", "x-stainless-runtime", "x-stainless-runtime-version",
                       "x-stainless-timeout"],
    )
    return app
