"""The device list and the RPC endpoint checks, without a model and without a real worker: a Python
socket plays the worker (or something that is not one), so every refusal is seen before llama.cpp."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ollama_magic.engine import devices
from ollama_magic.errors import EngineError, InvalidRequest


@contextmanager
def fake_worker(answer: bytes | None) -> Iterator[str]:
    """A listener on 127.0.0.1 that reads one hello and writes ``answer`` (None: never answers)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    stop = threading.Event()

    def serve() -> None:
        conns = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conns.append(conn)
            conn.recv(1 + 8 + 24)
            if answer is not None:
                conn.sendall(answer)
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.close()


def hello_answer(major: int, minor: int, patch: int = 0) -> bytes:
    return struct.pack("<Q", 28) + bytes([major, minor, patch, 0]) + bytes(24)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("endpoint", ["", "localhost", ":50052", "host:", "host:0", "host:65536", "host:80x",
                                      "host:-1", "::1:50052", "[::1]:50052", "a b:1", "user@host:1"])
def test_parse_endpoint_refuses_what_llama_cpp_would_abort_on_or_misread(endpoint: str) -> None:
    with pytest.raises(InvalidRequest, match="RPC endpoint"):
        devices.parse_endpoint(endpoint)


def test_parse_endpoint_reads_host_and_port() -> None:
    assert devices.parse_endpoint(" 10.0.0.5:50052 ") == ("10.0.0.5", 50052)
    assert devices.parse_endpoint("gpu-box.local:1") == ("gpu-box.local", 1)


def test_hello_reads_the_workers_protocol_version() -> None:
    with fake_worker(hello_answer(7, 0, 3)) as endpoint:
        host, port = devices.parse_endpoint(endpoint)
        assert devices.hello(host, port) == (7, 0, 3)
        assert devices.probe(endpoint) is None


def test_probe_says_why_a_worker_cannot_be_used() -> None:
    assert "refused" in devices.probe(f"127.0.0.1:{free_port()}").lower()
    with fake_worker(hello_answer(6, 0)) as endpoint:
        assert "protocol 6.0.0" in devices.probe(endpoint)
    with fake_worker(hello_answer(7, 1)) as endpoint:  # a newer minor: llama.cpp's client refuses it too
        assert "protocol 7.1.0" in devices.probe(endpoint)
    with fake_worker(b"HTTP/1.1 400 Bad Request\r\n\r\n") as endpoint:
        assert "not a ggml-rpc worker" in devices.probe(endpoint)
    with fake_worker(None) as endpoint:
        assert "no RPC answer within 0.2 s" in devices.probe(endpoint, timeout=0.2)
    assert "cannot resolve" in devices.probe("no-such-host.invalid:50052")


def test_a_bad_endpoint_never_reaches_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse, resolve and hello failures are one clear error naming the endpoint; ggml-rpc, had it seen
    them, would have aborted the process."""
    reached = []
    monkeypatch.setattr(devices._Ggml, "rpc_add_server", lambda self: lambda endpoint: reached.append(endpoint))
    with pytest.raises(InvalidRequest, match="localhost"):
        devices.add_rpc_server("localhost")
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(EngineError, match=f"RPC worker {dead} does not answer"):
        devices.add_rpc_server(dead)
    with fake_worker(hello_answer(6, 0)) as endpoint:
        with pytest.raises(EngineError, match=f"RPC worker {endpoint} does not answer: it speaks RPC protocol 6"):
            devices.add_rpc_server(endpoint)
    assert reached == [] and devices.rpc_servers() == []


def test_without_the_rpc_backend_adding_a_worker_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices._Ggml, "rpc_add_server", lambda self: None)
    with fake_worker(hello_answer(7, 0)) as endpoint:
        with pytest.raises(EngineError, match="GGML_RPC=ON"):
            devices.add_rpc_server(endpoint)


def test_the_cpu_device_is_listed_with_its_memory() -> None:
    listed = devices.devices()
    cpu = devices.cpu_device()
    assert cpu.kind == "CPU" and cpu.name == "CPU" and cpu.total > 0 and 0 < cpu.free <= cpu.total
    assert cpu.handle and cpu.reachable and cpu.endpoint == ""
    assert [d.handle for d in listed].count(cpu.handle) == 1
    # offloading never goes to the CPU (or an ACCEL device): they hold what is not offloaded
    assert all(d.kind not in ("CPU", "ACCEL") for d in devices.offload_devices())
