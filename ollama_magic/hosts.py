"""``OLLAMA_HOST``: where the server listens and where the CLI's ``ps``/``stop`` look for one.

A module with no imports of its own, so a malformed value is one clear error before anything that
reads the variable itself (the ``ollama`` client does, when it is imported) gets to it.
"""

from __future__ import annotations

import os

from .errors import InvalidRequest

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11434


def parse_host(value: str | None) -> tuple[str, int]:
    """``OLLAMA_HOST`` forms: ``host``, ``host:port``, ``:port``, ``http://host:port``, ``[::1]:port``.
    Anything else is an InvalidRequest naming the variable (one ``Error:`` line in the CLI)."""
    if not value or not value.strip():
        return DEFAULT_HOST, DEFAULT_PORT
    raw = value
    value = value.strip().split("://", 1)[-1].rstrip("/")
    host, port_text = value, ""
    if value.startswith("["):  # [::1]:port
        host, closed, rest = value[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise InvalidRequest(f"invalid OLLAMA_HOST {raw!r}: use host:port, e.g. 127.0.0.1:11434")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    if port_text:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise InvalidRequest(f"invalid OLLAMA_HOST {raw!r}: the port must be a number from 0 to 65535")
    if "/" in host or any(c.isspace() for c in host):
        raise InvalidRequest(f"invalid OLLAMA_HOST {raw!r}: use host:port, e.g. 127.0.0.1:11434")
    return host or DEFAULT_HOST, int(port_text) if port_text else DEFAULT_PORT


def env_host() -> tuple[str, int]:
    """``$OLLAMA_HOST``, checked."""
    return parse_host(os.environ.get("OLLAMA_HOST"))
