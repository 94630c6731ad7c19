"""``ollama-magic rpc-server``: make this machine's devices another machine's, with llama.cpp's own
worker (``ggml_backend_rpc_start_server`` in ggml-rpc), no server of ours.

The worker has no authentication and no encryption: whoever reaches its port can allocate its memory
and run graphs on it. So it listens on 127.0.0.1 unless told otherwise, warns (as llama.cpp's
``rpc-server`` does) for any other address, and refuses 0.0.0.0 (every interface: public, VPN and
container networks too, the usual accident) without ``--all-interfaces``; naming one LAN address is
already a choice of one network.

``ggml_backend_rpc_start_server`` never returns while it serves (an accept loop in C), so it runs on a
daemon thread and the main thread waits for Ctrl-C or SIGTERM, then ends the process with
``os._exit``: unwinding the interpreter would run C++ static destructors under the serving thread.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import NoReturn

from ..errors import EngineError, InvalidRequest
from . import devices as devs

DEFAULT_PORT = 50052  # llama.cpp's rpc-server's


def check_host(host: str, all_interfaces: bool) -> None:
    """The worker binds IPv4 addresses only (ggml-rpc's ``inet_addr``): anything else is refused here,
    where llama.cpp would only print "Failed to create server socket"."""
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise InvalidRequest(f"--host {host!r}: the RPC worker listens on an IPv4 address "
                             "(127.0.0.1, or this machine's address on a trusted network)") from None
    if address.is_unspecified and not all_interfaces:
        raise InvalidRequest("--host 0.0.0.0 listens on every interface, and the worker has no authentication "
                             "and no encryption: give this machine's address on the trusted network, or add "
                             "--all-interfaces if every network this machine is on is trusted")


def served_devices(with_cpu: bool) -> list[devs.Device]:
    """llama.cpp's rpc-server's choice: the GPUs (and other non-CPU devices) if there are any, else the
    CPU; ``with_cpu`` adds the CPU beside GPUs (its RAM then becomes a device of the client too)."""
    local = [d for d in devs.devices() if d.kind not in ("CPU", "ACCEL", "RPC")]
    if with_cpu or not local:
        local.append(devs.cpu_device())
    return local


def serve(host: str, port: int, threads: int, *, all_interfaces: bool = False, with_cpu: bool = False,
          cache_dir: Path | None = None) -> NoReturn:
    """Serve until Ctrl-C or SIGTERM, then end the process (exit code 1 when the worker could not
    start or stopped by itself)."""
    check_host(host, all_interfaces)
    if not 0 < port < 65536:
        raise InvalidRequest(f"--port {port}: a port is 1-65535")
    if threads < 1:
        raise InvalidRequest(f"--threads {threads}: at least 1")
    g = devs._ggml()
    reg = g.reg_by_name(b"RPC")
    address = g.reg_get_proc_address(reg, b"ggml_backend_rpc_start_server") if reg else None
    if not address:
        raise EngineError("this llama.cpp build has no RPC backend: reinstall llama-cpp-python with "
                          "CMAKE_ARGS=\"-DGGML_RPC=ON\" (the Makefile's default)")
    _check_port_free(host, port)
    served = served_devices(with_cpu)
    start = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                             ctypes.POINTER(ctypes.c_void_p))(address)
    handles = (ctypes.c_void_p * len(served))(*[d.handle for d in served])
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    cache = str(cache_dir).encode() if cache_dir is not None else None

    if not ipaddress.IPv4Address(host).is_loopback:
        print(f"WARNING: listening on {host}: anyone who reaches {host}:{port} can use this worker (no "
              "authentication, no encryption). Only on a trusted network.", file=sys.stderr)
    for d in served:
        print(f"serving {d.name} ({d.description}, {d.total / 2**30:.1f} GiB) on {host}:{port}"
              f"{f' with {threads} thread' + 's' * (threads > 1) if d.kind == 'CPU' else ''}", flush=True)
    print(f"add it with OLLAMA_MAGIC_RPC={host}:{port} or %ollama rpc add {host}:{port}; Ctrl-C stops it",
          flush=True)

    worker = threading.Thread(target=start, args=(f"{host}:{port}".encode(), cache, threads, len(served), handles),
                              name="rpc-server", daemon=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    try:
        while worker.is_alive() and not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    failed = not worker.is_alive()
    print("RPC worker could not start (see above)" if failed else "RPC worker stopped", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1 if failed else 0)


def _check_port_free(host: str, port: int) -> None:
    """A busy port is one clear line (llama.cpp would print "Failed to create server socket")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ggml-rpc binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise EngineError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


__all__ = ["DEFAULT_PORT", "check_host", "serve", "served_devices"]
