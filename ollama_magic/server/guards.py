"""Who may use the server, checked before any route runs: Ollama's rules, as pure ASGI middleware.

- **Origin** (``envconfig.AllowedOrigins`` + gin-contrib/cors): a request that carries an ``Origin``
  header not on the allow-list gets 403 and is not carried out, preflight or not. Without this, any web
  page the user visits could POST a "simple" ``text/plain`` request (we read every body as JSON, as
  Ollama does) and copy, delete or create models. Requests without ``Origin`` (curl, SDKs) pass.
- **Host** (``allowedHostsMiddleware``): when the listening socket is a loopback address, the ``Host``
  header must name this machine (a loopback, private, unspecified or local-interface IP, ``localhost``,
  the hostname, or ``*.localhost`` / ``*.local`` / ``*.internal``). That stops DNS rebinding, where a
  page's own domain is re-pointed at 127.0.0.1. Bound to any other address (``0.0.0.0``), the server
  was made reachable on purpose and any Host is accepted.
- **API key**: with one configured, every request needs ``Authorization: Bearer <key>`` or
  ``x-api-key: <key>`` (how Anthropic's SDKs send it; Claude Code's ANTHROPIC_AUTH_TOKEN is a Bearer).

They are plain ASGI callables rather than ``BaseHTTPMiddleware``, which wraps the response stream in
its own task and is known to hide client disconnects from streaming routes (Starlette #1706/#1715).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
from functools import lru_cache
from typing import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from .envelopes import send_error

#: Ollama's built-in allow-list: local pages on any port, and app / editor webviews.
DEFAULT_ORIGINS: tuple[str, ...] = (
    *(f"{scheme}://{host}{port}" for host in ("localhost", "127.0.0.1", "0.0.0.0")
      for scheme in ("http", "https") for port in ("", ":*")),
    "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*",
)
LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def allowed_origins(extra: str | None) -> list[str]:
    """``OLLAMA_ORIGINS`` (comma-separated, ``*`` wildcards) first, then the defaults, as Ollama lists them."""
    return [o.strip() for o in (extra or "").split(",") if o.strip()] + list(DEFAULT_ORIGINS)


def origin_regex(origins: Iterable[str]) -> str:
    """One anchored regex for an allow-list whose entries may hold ``*`` (any text), as gin-contrib/cors reads them."""
    parts = [".*" if o == "*" else re.escape(o.lower()).replace(r"\*", ".*") for o in origins]
    return "^(" + "|".join(parts) + ")$"


def host_of(header: str) -> str:
    """The host part of a ``Host`` header: ``[::1]:8080`` -> ``::1``, ``example:80`` -> ``example``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.split(":", 1)[0] if header.count(":") == 1 else header


@lru_cache(maxsize=1)
def _interface_addresses() -> frozenset[str]:
    import psutil

    return frozenset(a.address.split("%", 1)[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                     if a.family in (socket.AF_INET, socket.AF_INET6))


def allowed_host(header: str) -> bool:
    """Ollama's rule: may a request with this ``Host`` reach a server bound to loopback?"""
    host = host_of(header)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return ip.is_loopback or ip.is_private or ip.is_unspecified or str(ip) in _interface_addresses()
    return host in ("", "localhost") or host == socket.gethostname().lower() or host.endswith(LOCAL_SUFFIXES)


def bound_to_loopback(scope: Scope) -> bool:
    server = scope.get("server")
    if not server:
        return False
    try:
        return ipaddress.ip_address(str(server[0])).is_loopback
    except ValueError:
        return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


class OriginGuard:
    """403 for a request whose ``Origin`` is not allowed; sits outside CORS so preflights are refused too."""

    def __init__(self, app: ASGIApp, *, allow_origin_regex: str) -> None:
        self.app = app
        self.allowed = re.compile(allow_origin_regex)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = _header(scope, b"origin")
            if origin is not None and not self.allowed.fullmatch(origin.lower()):
                await send_error(scope, send, f"origin {origin!r} is not allowed: add it to OLLAMA_ORIGINS", 403)
                return
        await self.app(scope, receive, send)


class HostGuard:
    """403 for a ``Host`` that does not name this machine, when bound to loopback (DNS rebinding)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and bound_to_loopback(scope):
            host = _header(scope, b"host") or ""
            if not allowed_host(host):
                await send_error(scope, send, f"host {host!r} is not allowed", 403)
                return
        await self.app(scope, receive, send)


def given_key(scope: Scope) -> str:
    """The API key a request carries: ``Authorization: Bearer <key>`` (OpenAI's and Ollama's clients),
    else ``x-api-key`` (Anthropic's); empty when neither."""
    given = _header(scope, b"authorization") or ""
    if given.lower().startswith("bearer "):
        return given[7:]
    return _header(scope, b"x-api-key") or ""


class BearerAuth:
    """With an API key configured, 401 unless the request carries it (``given_key``; compared in constant time)."""

    def __init__(self, app: ASGIApp, *, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") != "OPTIONS":
            if not secrets.compare_digest(given_key(scope).encode(), self.key):
                await send_error(scope, send, "unauthorized: send Authorization: Bearer <api key> (or x-api-key)", 401)
                return
        await self.app(scope, receive, send)
