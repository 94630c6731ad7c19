"""``OLLAMA_HOST`` read (through ``envconfig``, which declares it and where Ollama listens by
default) and checked, for the server, the CLI and the notebook.

It imports only our exceptions and ``envconfig`` (itself light), so a malformed value is one clear
error before anything that reads the variable itself (the ``ollama`` client does, when it is
imported) gets to it.
"""

from __future__ import annotations

from . import envconfig
from .envconfig import DEFAULT_ADDRESS, DEFAULT_HOST, DEFAULT_PORT
from .errors import InvalidRequest


def ollama_host() -> str:
    """The server a client talks to: ``$OLLAMA_HOST``, else ``127.0.0.1:11434`` (as the ollama CLI)."""
    return envconfig.host()


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
            raise InvalidRequest(f"invalid OLLAMA_HOST {raw!r}: use host:port, e.g. {DEFAULT_ADDRESS}")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    if port_text:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise InvalidRequest(f"invalid OLLAMA_HOST {raw!r}: the port must be a number from 0 to 65535")
    if "/" in host or any(c.isspace() for c in host):
        raise InvalidRequest(f"invalid OLLAMA_HOST {raw!r}: use host:port, e.g. {DEFAULT_ADDRESS}")
    return host or DEFAULT_HOST, int(port_text) if port_text else DEFAULT_PORT


def env_host() -> tuple[str, int]:
    """``$OLLAMA_HOST``, checked: where ``serve`` listens."""
    return parse_host(envconfig.host.raw())


__all__ = ["DEFAULT_ADDRESS", "DEFAULT_HOST", "DEFAULT_PORT", "env_host", "ollama_host", "parse_host"]
