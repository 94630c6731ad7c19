"""Serving the kernel's Engine over HTTP from a daemon thread (and, for the CLI, in the foreground).

The listening socket is bound by us before uvicorn starts, so a busy port is a clear error at
``start()`` instead of a log line in a thread nobody watches; port 0 picks a free port.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Iterator

import uvicorn

from ..engine import Engine
from ..errors import ServerError
from ..hosts import DEFAULT_HOST, DEFAULT_PORT
from .app import create_app


#: the signals that stop ``serve`` (uvicorn's list: Ctrl-Break too on Windows)
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGBREAK", None)) if s is not None)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    _claim_address(sock)
    try:
        sock.bind((host, port))
    except socket.gaierror as exc:
        sock.close()
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (check OLLAMA_HOST)") from None
    except OSError as exc:
        sock.close()
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server using it?)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _claim_address(sock: socket.socket) -> None:
    """Make a second server on a port in use fail to bind. On POSIX ``SO_REUSEADDR`` only lets a
    restarted server bind over connections in TIME_WAIT; on Windows it would let a second process bind
    the same port and take half the requests, so there the port is claimed with
    ``SO_EXCLUSIVEADDRUSE`` instead (asyncio sets ``reuse_address`` on Unix only, for the same reason)."""
    exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)  # Windows only
    if exclusive is not None:
        sock.setsockopt(socket.SOL_SOCKET, exclusive, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


class _Server(uvicorn.Server):
    """uvicorn re-raises a SIGINT/SIGTERM after its graceful shutdown, so ``serve`` would end in a
    KeyboardInterrupt or a kill by signal before the engine is closed. A signal here means "stop
    serving": our own handlers set uvicorn's public ``should_exit`` (a second Ctrl-C, ``force_exit``:
    open streams are not waited for), so nothing is re-raised and the process then exits normally.
    Signal handlers can be installed from the main thread only: a kernel's background server installs
    none, and the kernel's Ctrl-C stays the kernel's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._stop_on_signal) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop_on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def make_server(engine: Engine, *, api_key: str | None = None, origins: str | None = None) -> uvicorn.Server:
    config = uvicorn.Config(create_app(engine, api_key=api_key, origins=origins), log_level="warning",
                            timeout_graceful_shutdown=5)
    return _Server(config)


@dataclass
class ServerStatus:
    running: bool
    url: str | None


class BackgroundServer:
    """``start()`` / ``stop()`` an HTTP server sharing ``engine`` (same models, same loaded weights)."""

    def __init__(self, engine: Engine, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 api_key: str | None = None, origins: str | None = None) -> None:
        self.engine = engine
        self.host, self.port = host, port
        self.api_key, self.origins = api_key, origins
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str | None:
        if not self.running or self._socket is None:
            return None
        host, port = self._socket.getsockname()[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def status(self) -> ServerStatus:
        return ServerStatus(self.running, self.url)

    def start(self, timeout: float = 15.0) -> str:
        """Start serving; return the URL. Raises ServerError if the port is taken."""
        if self.running:
            return self.url or ""
        self._socket = bind(self.host, self.port)
        self._server = make_server(self.engine, api_key=self.api_key, origins=self.origins)
        server, sock = self._server, self._socket
        self._thread = threading.Thread(target=lambda: server.run(sockets=[sock]), name="ollama-magic-http", daemon=True)
        # uvicorn installs signal handlers only from the main thread, so a kernel's Ctrl-C stays the kernel's
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerError("the HTTP server did not start")
            time.sleep(0.02)
        return self.url or ""

    def __enter__(self) -> "BackgroundServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and free the port (open streams are cancelled)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
