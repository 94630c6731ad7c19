"""The listening socket ``serve`` and ``%ollama serve`` bind: a port another server holds is a clear
error on every OS, and on Windows that needs ``SO_EXCLUSIVEADDRUSE`` (its ``SO_REUSEADDR`` would let a
second server bind the port and take half the requests)."""

from __future__ import annotations

import socket

import pytest

from ollama_magic.errors import ServerError
from ollama_magic.server import background

WINDOWS_SO_EXCLUSIVEADDRUSE = -5  # ~SO_REUSEADDR in winsock2.h


class RecordingSocket:
    """A socket that records its options (the calls ``bind`` makes), bound to nothing."""

    def __init__(self, *args: object) -> None:
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))

    def bind(self, address: object) -> None: ...
    def listen(self, backlog: int) -> None: ...
    def set_inheritable(self, inheritable: bool) -> None: ...
    def close(self) -> None: ...


def test_on_windows_the_port_is_claimed_exclusively_and_never_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "SO_EXCLUSIVEADDRUSE", WINDOWS_SO_EXCLUSIVEADDRUSE, raising=False)
    monkeypatch.setattr(background.socket, "socket", RecordingSocket)
    sock = background.bind("127.0.0.1", 11434)
    assert sock.options == [(socket.SOL_SOCKET, WINDOWS_SO_EXCLUSIVEADDRUSE, 1)]


def test_a_port_another_server_listens_on_is_a_clear_error() -> None:
    first = background.bind("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(ServerError, match=f"cannot listen on 127.0.0.1:{port}"):
            background.bind("127.0.0.1", port)
    finally:
        first.close()
