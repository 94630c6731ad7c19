"""Ollama's rules for who may use the server: the Origin allow-list, the allowed-hosts rule against
DNS rebinding, and OLLAMA_HOST parsing. Pure functions and ASGI calls; no model, no socket."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from ollama_magic.errors import InvalidRequest
from ollama_magic.hosts import parse_host
from ollama_magic.server.guards import HostGuard, allowed_host, allowed_origins, origin_regex


@pytest.mark.parametrize("origin", [
    "http://localhost", "http://localhost:8888", "https://127.0.0.1:3000", "http://0.0.0.0:11434",
    "app://obsidian.md", "file://", "tauri://localhost", "vscode-webview://abc123", "vscode-file://vscode-app",
])
def test_local_pages_and_app_webviews_are_allowed_origins(origin: str) -> None:
    assert re.fullmatch(origin_regex(allowed_origins(None)), origin)


@pytest.mark.parametrize("origin", [
    "http://evil.example", "https://localhost.evil.example", "http://127.0.0.1.nip.io", "null",
    "chrome-extension://abcdef", "http://localhostx:80",
])
def test_foreign_origins_are_not_allowed(origin: str) -> None:
    assert not re.fullmatch(origin_regex(allowed_origins(None)), origin)


def test_ollama_origins_extends_the_list_with_wildcards() -> None:
    pattern = origin_regex(allowed_origins("https://notebooks.example.org, chrome-extension://*"))
    assert re.fullmatch(pattern, "https://notebooks.example.org")
    assert re.fullmatch(pattern, "chrome-extension://abcdef")
    assert re.fullmatch(pattern, "http://localhost:1234")  # the defaults stay
    assert not re.fullmatch(pattern, "https://notebooks.example.org.evil.example")
    assert re.fullmatch(origin_regex(allowed_origins("*")), "https://anything.example")


@pytest.mark.parametrize("host", [
    "127.0.0.1:11434", "localhost:11434", "LOCALHOST", "[::1]:11434", "10.0.0.5", "192.168.1.2:80",
    "0.0.0.0:11434", "app.localhost:11434", "printer.local", "ollama.internal", socket.gethostname(), "",
])
def test_hosts_naming_this_machine_are_allowed(host: str) -> None:
    assert allowed_host(host)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:11434", "8.8.8.8", "localhost.evil.example",
                                  "[2001:4860:4860::8888]:80"])
def test_other_hosts_are_refused(host: str) -> None:
    assert not allowed_host(host)


def _status(bound: str, host: str) -> int:
    """The status HostGuard answers for a request with ``Host: host`` on a socket bound to ``bound``."""
    sent: list[dict] = []

    async def app(scope, receive, send) -> None:  # noqa: ANN001
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/api/tags", "server": (bound, 11434),
             "headers": [(b"host", host.encode())]}
    asyncio.run(HostGuard(app)(scope, receive, send))
    return sent[0]["status"]


def test_the_host_rule_applies_only_when_bound_to_loopback() -> None:
    assert _status("127.0.0.1", "evil.example") == 403
    assert _status("::1", "evil.example") == 403
    assert _status("127.0.0.1", "localhost:11434") == 200
    assert _status("0.0.0.0", "evil.example") == 200  # bound to every interface on purpose: any Host
    assert _status("192.168.1.2", "evil.example") == 200


@pytest.mark.parametrize("value, expected", [
    (None, ("127.0.0.1", 11434)), ("", ("127.0.0.1", 11434)), ("0.0.0.0", ("0.0.0.0", 11434)),
    (":8080", ("127.0.0.1", 8080)), ("http://localhost:9000/", ("localhost", 9000)), ("[::1]:7000", ("::1", 7000)),
])
def test_ollama_host_forms(value: str | None, expected: tuple[str, int]) -> None:
    assert parse_host(value) == expected


@pytest.mark.parametrize("value", ["127.0.0.1:abc", "127.0.0.1:99999", "[::1", "[::1]x", "host:-1", "a b:80"])
def test_bad_ollama_host_is_an_invalid_request(value: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid OLLAMA_HOST"):
        parse_host(value)
