"""``GET /metrics`` (the engine's Prometheus metrics) and the middleware that counts HTTP requests.

Off unless ``OLLAMA_MAGIC_METRICS=1`` (or ``create_app(metrics=True)``): Ollama serves no
``/metrics``, so a server that answers as Ollama does answers 404 there too unless asked; and the
numbers say which models are used, how much and how fast, which an operator should decide to publish.
When on, the route sits behind the same guards as every other one (Origin, Host, the API key):
Prometheus sends the key with ``authorization: {credentials: <key>}`` in its scrape config.

HTTP requests are counted by route template (``/api/blobs/{digest}``, never the raw path: one series
per route, not one per digest or typo) and status; requests that match no route count as
``route="unmatched"``. The middleware is the outermost layer, so requests the guards refuse (401,
403, 413) count too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Iterable, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import EngineMetrics
from .schemas import native_responses

router = APIRouter(tags=["metrics"], responses=native_responses())
UNMATCHED = "unmatched"
#: methods counted by name; any other (a client may send any token) counts as "other": one series each
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: (method, path) -> route template, for the paths seen last (paths with parameters are unbounded)
ROUTE_CACHE = 1024


@router.get("/metrics", response_class=Response, responses={
    200: {"description": "the engine's metrics in Prometheus' text exposition format",
          "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}})
def metrics(request: Request) -> Response:
    """Not in Ollama (llama-server's ``--metrics``): requests, tokens, latencies, queues, slots, KV cache
    and loaded models' bytes, in Prometheus' text format. Only with ``OLLAMA_MAGIC_METRICS=1``."""
    return Response(request.app.state.engine.metrics.scrape(), media_type=CONTENT_TYPE_LATEST)


class HttpMetrics:
    """Counts every HTTP request by method, route template and status, and times it to its last byte."""

    def __init__(self, app: ASGIApp, *, metrics: EngineMetrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self._flat: list[BaseRoute] | None = None  # flattened at the first request, once every router is in
        self._templates: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server answers when the app fails before it starts a response

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.http_answered(method, self.template(scope), status, time.perf_counter() - start)

    def template(self, scope: Scope) -> str:
        """The path template of the route ``scope`` reaches (by path; a wrong method still names it)."""
        key = (scope["method"], scope["path"])
        found = self._templates.get(key)
        if found is None:
            found = UNMATCHED
            if self._flat is None:
                self._flat = list(_flat_routes(self.routes))
            for route in self._flat:
                match, _ = route.matches(scope)
                if match is Match.FULL:
                    found = getattr(route, "path", UNMATCHED)
                    break
                if match is Match.PARTIAL and found == UNMATCHED:
                    found = getattr(route, "path", UNMATCHED)
            self._templates[key] = found
            if len(self._templates) > ROUTE_CACHE:
                self._templates.popitem(last=False)
        return found


def _flat_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, with included routers opened: FastAPI 0.16x keeps an ``include_router`` as one
    lazy entry (its ``original_router``); older releases copied the routes in."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat_routes(inner.routes)
        else:
            yield route
