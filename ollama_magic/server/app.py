"""The FastAPI application: the Engine behind Ollama's native routes and the OpenAI-compatible ones.

Layers, outermost first: with metrics on, the HTTP request counter (``metrics_api``); the Origin check
(403 before CORS, so a foreign page's preflight fails too), CORS headers, the Host check (DNS
rebinding), the API key, the body limit, JSON bodies, then the routes.
"""

from __future__ import annotations

import contextlib
import re
from typing import AsyncIterator

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from .. import envconfig
from .._version import __version__
from ..engine import Engine
from . import anthropic_api, metrics_api, ollama_api, openai_api, rerank_api, responses_api
from .bodies import BodyLimit, JSONBodies, max_body_from_env
from .envelopes import install_error_handlers
from .guards import BearerAuth, HostGuard, OriginGuard, allowed_origins, origin_regex

CORS_HEADERS = ["Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With", "OpenAI-Beta",
                "x-stainless-arch", "x-stainless-async", "x-stainless-custom-poll-interval",
                "x-stainless-helper-method", "x-stainless-lang", "x-stainless-os", "x-stainless-package-version",
                "x-stainless-poll-helper", "x-stainless-retry-count", "x-stainless-runtime",
                "x-stainless-runtime-version", "x-stainless-timeout",
                "x-api-key", "anthropic-version", "anthropic-beta", "anthropic-dangerous-direct-browser-access"]


def _operation_id(route: APIRoute) -> str:
    """FastAPI's default (name, path, method), with every method of the route in it."""
    methods = "_".join(sorted(m.lower() for m in route.methods or ()))
    return re.sub(r"\W", "_", f"{route.name}{route.path_format}") + f"_{methods}"


def _openapi_without_422(app: FastAPI) -> dict:
    """FastAPI documents a 422 on every route with a body; ours answers 400 (Ollama's status), which the
    routes document instead, so the 422s and their schemas would be a promise never kept. HEAD
    answers are documented without a body."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                responses = operation.get("responses", {})
                responses.pop("422", None)
                if method == "head":  # a HEAD answer never has a body, whatever its status
                    for response in responses.values():
                        response.pop("content", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """What the app holds beyond the engine is let go when it stops (the stored responses' file)."""
    yield
    await anyio.to_thread.run_sync(responses_api.close_responses_store, app)


def create_app(engine: Engine, *, api_key: str | None = None, origins: str | None = None,
               max_body: int | None = None, metrics: bool | None = None) -> FastAPI:
    """Build the app. ``api_key`` defaults to $OLLAMA_MAGIC_API_KEY, ``origins`` (extra allowed origins,
    comma-separated, ``*`` wildcards) to $OLLAMA_ORIGINS, ``max_body`` to $OLLAMA_MAGIC_MAX_BODY,
    ``metrics`` (serve ``/metrics`` and count HTTP requests: ``metrics_api``) to $OLLAMA_MAGIC_METRICS."""
    app = FastAPI(
        generate_unique_id_function=_operation_id,
        title="ollama-magic",
        version=__version__,
        description="Ollama's REST API and its OpenAI-compatible endpoints, served by an in-process llama.cpp engine.",
        lifespan=_lifespan,
    )
    app.state.engine = engine
    app.include_router(ollama_api.router)
    app.include_router(openai_api.router)
    app.include_router(responses_api.router)
    app.include_router(rerank_api.router)
    app.include_router(anthropic_api.router)
    metrics = metrics if metrics is not None else envconfig.metrics()
    if metrics:
        app.include_router(metrics_api.router)
    install_error_handlers(app)
    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]

    api_key = api_key if api_key is not None else envconfig.api_key() or None
    allowed = origin_regex(allowed_origins(origins if origins is not None else envconfig.origins()))
    # add_middleware wraps: the last one added is the outermost
    app.add_middleware(JSONBodies)
    app.add_middleware(BodyLimit, limit=max_body if max_body is not None else max_body_from_env())
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)
    app.add_middleware(HostGuard)
    app.add_middleware(CORSMiddleware, allow_origin_regex=allowed, allow_methods=["*"], allow_headers=CORS_HEADERS)
    app.add_middleware(OriginGuard, allow_origin_regex=allowed)
    if metrics:  # outermost: what the guards refuse counts too
        app.add_middleware(metrics_api.HttpMetrics, metrics=engine.metrics, routes=app.router.routes)
    return app
