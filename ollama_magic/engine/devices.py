"""llama.cpp's devices as llama.cpp itself sees them: ggml's backend registry, read through ctypes.

llama-cpp-python binds ``llama_*`` but not ggml's registry, so this module opens the two libraries it
already loaded (``libggml`` holds the registry, ``libggml-base`` the device calls) and asks them, as
llama-server does: CPU, CUDA, Metal, Vulkan, ROCm devices, and the RPC devices of other machines.

RPC devices (ggml-rpc, ``GGML_RPC=ON``) are the dangerous ones. llama.cpp's client ``GGML_ABORT``s,
killing the whole process, when an endpoint does not parse, does not connect or fails the hello
handshake, and it connects again each time it needs a worker and holds no connection (reading a
device's memory included). So nothing reaches llama.cpp for an endpoint that Python has not first
parsed and seen answer: :func:`add_rpc_server` does the RPC hello itself, and :func:`devices` reads an
RPC device's memory only after the same check (a worker that does not answer shows 0 bytes and
``reachable=False``; hand only reachable devices to a load, see :func:`dead_rpc_servers`).

A worker (``ggml_backend_rpc_start_server``) serves one client at a time: while this process holds a
connection (a model loaded there), a second connection waits. The check therefore first looks for
this process's own connection to the worker (psutil): established means llama.cpp is talking to it
now, closing (CLOSE_WAIT) means the worker went away.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil

from .. import envconfig
from ..errors import EngineError, InvalidRequest

log = logging.getLogger("ollama_magic")

#: ggml-rpc.h's RPC_PROTO_MAJOR/MINOR_VERSION in the llama.cpp our pinned llama-cpp-python vendors: a
#: worker of another major version (or a newer minor) fails llama.cpp's hello, which aborts.
RPC_PROTO_MAJOR = 7
RPC_PROTO_MINOR = 0
_RPC_CMD_HELLO = 14  # static_assert'ed in ggml-rpc.cpp: never changes
_RPC_CONN_CAPS_SIZE = 24  # transport.h
#: seconds a worker has to answer the hello; a busy worker (serving another client) does not answer
PROBE_TIMEOUT = 3.0

# enum ggml_backend_dev_type (ggml-backend.h)
_KINDS = {0: "CPU", 1: "GPU", 2: "IGPU", 3: "ACCEL", 4: "META"}
_TYPE_CPU, _TYPE_GPU, _TYPE_IGPU, _TYPE_ACCEL = 0, 1, 2, 3


@dataclass(frozen=True)
class Device:
    """One llama.cpp device, its memory as read when it was listed."""

    name: str  # "CPU", "CUDA0", "RPC0[127.0.0.1:50052]" (an RPC device's buffer name, see _device)
    description: str  # an RPC device's is its worker's endpoint, "127.0.0.1:50052"
    kind: str  # "CPU", "GPU", "IGPU", "ACCEL", or "RPC" for RPC devices
    free: int  # bytes
    total: int
    handle: int  # the ggml_backend_dev_t pointer value (for llama_model_params.devices)
    #: False for an RPC device whose worker does not answer now (free and total then read 0)
    reachable: bool = True

    @property
    def endpoint(self) -> str:
        """The worker's host:port for an RPC device, "" for a local one."""
        return self.description if self.kind == "RPC" else ""


class _DevCaps(ctypes.Structure):
    _fields_ = [("async_", ctypes.c_bool), ("host_buffer", ctypes.c_bool),
                ("buffer_from_host_ptr", ctypes.c_bool), ("events", ctypes.c_bool),
                ("mmap_support", ctypes.c_bool)]


class _DevProps(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("description", ctypes.c_char_p),
                ("memory_free", ctypes.c_size_t), ("memory_total", ctypes.c_size_t),
                ("type", ctypes.c_int), ("device_id", ctypes.c_char_p), ("caps", _DevCaps)]


def _library(lib_dir: Path, base: str) -> ctypes.CDLL:
    """The copy of ``base`` that libllama itself uses. A wheel cannot hold symlinks, so llama-cpp-python's
    Linux wheel has three copies of each library (``libggml.so``, ``.so.0``, ``.so.0.25.3``); libllama
    loaded the one its soname names, and a second copy would be a second, empty registry (devices added
    there are never seen by a load). ``RTLD_NOLOAD`` by that bare soname returns the loaded one."""
    if sys.platform.startswith("linux"):
        for path in sorted(lib_dir.glob(f"lib{base}.so.*"), key=lambda p: len(p.name)):
            try:
                return ctypes.CDLL(path.name, mode=os.RTLD_NOLOAD | ctypes.RTLD_LOCAL)
            except OSError:
                continue
    names = {"darwin": [f"lib{base}.0.dylib", f"lib{base}.dylib"], "win32": [f"{base}.dll"]}
    for name in names.get(sys.platform, [f"lib{base}.so"]):
        if (lib_dir / name).exists():
            return ctypes.CDLL(str(lib_dir / name))
    raise EngineError(f"llama.cpp's {base} library is not in {lib_dir}: reinstall llama-cpp-python")


class _Ggml:
    """The registry and device calls, with their C signatures (ggml-backend.h)."""

    def __init__(self) -> None:
        import llama_cpp

        llama_cpp.llama_backend_init()  # loads dynamic backends where the build has them
        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        ggml, base = _library(lib_dir, "ggml"), _library(lib_dir, "ggml-base")
        p, s, cs = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        sig = {
            (ggml, "ggml_backend_dev_count"): (s, []),
            (ggml, "ggml_backend_dev_get"): (p, [s]),
            (ggml, "ggml_backend_dev_by_type"): (p, [ctypes.c_int]),
            (ggml, "ggml_backend_reg_by_name"): (p, [cs]),
            (ggml, "ggml_backend_register"): (None, [p]),
            (base, "ggml_backend_dev_name"): (cs, [p]),
            (base, "ggml_backend_dev_description"): (cs, [p]),
            (base, "ggml_backend_dev_type"): (ctypes.c_int, [p]),
            (base, "ggml_backend_dev_memory"): (None, [p, ctypes.POINTER(s), ctypes.POINTER(s)]),
            (base, "ggml_backend_dev_get_props"): (None, [p, ctypes.POINTER(_DevProps)]),
            (base, "ggml_backend_dev_backend_reg"): (p, [p]),
            (base, "ggml_backend_reg_name"): (cs, [p]),
            (base, "ggml_backend_reg_dev_count"): (s, [p]),
            (base, "ggml_backend_reg_dev_get"): (p, [p, s]),
            (base, "ggml_backend_reg_get_proc_address"): (p, [p, cs]),
        }
        for (lib, name), (restype, argtypes) in sig.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name.removeprefix("ggml_backend_"), fn)

    def reg_of(self, dev: int) -> str:
        return (self.reg_name(self.dev_backend_reg(dev)) or b"").decode()

    def rpc_add_server(self) -> ctypes._CFuncPtr | None:
        """ggml_backend_rpc_add_server, found as llama-server finds it (common/arg.cpp); None in a
        build without GGML_RPC."""
        reg = self.reg_by_name(b"RPC")
        address = self.reg_get_proc_address(reg, b"ggml_backend_rpc_add_server") if reg else None
        if not address:
            return None
        return ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(address)


_lock = threading.RLock()
_ggml_instance: _Ggml | None = None
#: endpoint as given -> (resolved IPv4, port), in the order they were added
_servers: dict[str, tuple[str, int]] = {}
_env_read = False


def _ggml() -> _Ggml:
    global _ggml_instance
    with _lock:
        if _ggml_instance is None:
            _ggml_instance = _Ggml()
        return _ggml_instance


def _add_env_servers() -> None:
    """``OLLAMA_MAGIC_RPC``'s workers, added the first time the devices are listed. A worker that does
    not answer is one warning and is left out (a bad setting never stops the engine); ``%ollama rpc
    add`` adds it later."""
    global _env_read
    with _lock:
        if _env_read:
            return
        _env_read = True
        for endpoint in filter(None, (e.strip() for e in envconfig.rpc().split(","))):
            try:
                add_rpc_server(endpoint)
            except (InvalidRequest, EngineError) as exc:
                log.warning("OLLAMA_MAGIC_RPC: %s; left out (add it later with %%ollama rpc add %s)", exc, endpoint)


def rpc_supported() -> bool:
    """Whether this llama.cpp build has the RPC backend (``GGML_RPC=ON``)."""
    return _ggml().reg_by_name(b"RPC") is not None


# ---- endpoints -----------------------------------------------------------------------------------

def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """host and port of "host:port", as ggml-rpc will read it (IPv4 or a host name: its client resolves
    with gethostbyname, so no IPv6); InvalidRequest for anything llama.cpp would abort on or misread
    (its parser splits at the first ':' and reads the port with stoi, so "h:80x" would be port 80)."""
    text = endpoint.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or ":" in host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidRequest(f"RPC endpoint {endpoint!r} is not host:port (an IPv4 address or host name, "
                             "then a port 1-65535)")
    if any(c.isspace() or c in "/@[]" for c in host):
        raise InvalidRequest(f"RPC endpoint {endpoint!r}: {host!r} is not a host name")
    return host, int(port_text)


def _resolve(endpoint: str, host: str) -> str:
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise EngineError(f"RPC worker {endpoint}: cannot resolve {host!r} ({exc})") from None


def _own_connection(ip: str, port: int) -> str | None:
    """The state of this process's TCP connection to ip:port ("ESTABLISHED", "CLOSE_WAIT", ...), or
    None when it holds none: llama.cpp's dispatcher keeps one open while it uses the worker."""
    try:
        connections = psutil.Process().net_connections(kind="tcp4")
    except (psutil.Error, OSError):
        return None
    states = [c.status for c in connections if c.raddr and c.raddr.ip == ip and c.raddr.port == port]
    if psutil.CONN_ESTABLISHED in states:
        return psutil.CONN_ESTABLISHED
    return states[0] if states else None


def hello(ip: str, port: int, timeout: float = PROBE_TIMEOUT) -> tuple[int, int, int]:
    """The RPC hello that llama.cpp's client sends first (``negotiate_hello``), done in Python:
    returns the worker's protocol version; OSError (timeout included) or ValueError when it does not
    answer as a worker does. Sends all-zero connection caps: plain TCP, no RDMA upgrade."""
    request = struct.pack("<BQ", _RPC_CMD_HELLO, _RPC_CONN_CAPS_SIZE) + bytes(_RPC_CONN_CAPS_SIZE)
    with socket.create_connection((ip, port), timeout=timeout) as sock:
        sock.sendall(request)
        (size,) = struct.unpack("<Q", _recv_exactly(sock, 8))
        if size != 4 + _RPC_CONN_CAPS_SIZE:
            raise ValueError(f"answered with a {size}-byte hello, not a ggml-rpc worker's")
        major, minor, patch = _recv_exactly(sock, size)[:3]
    return major, minor, patch


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed the connection")
        data += chunk
    return data


def probe(endpoint: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when llama.cpp may talk to the worker at ``endpoint`` now without aborting; else why not,
    in a few words."""
    try:
        host, port = parse_endpoint(endpoint)
        ip = _resolve(endpoint, host)
    except (InvalidRequest, EngineError) as exc:
        return str(exc)
    state = _own_connection(ip, port)
    if state == psutil.CONN_ESTABLISHED:
        return None  # llama.cpp's own connection, in use: a hello would wait behind it
    if state == psutil.CONN_CLOSE_WAIT:
        return "the worker closed this process's connection (stopped or crashed)"
    try:
        major, minor, patch = hello(ip, port, timeout)
    except TimeoutError:
        if _own_connection(ip, port) == psutil.CONN_ESTABLISHED:
            return None  # llama.cpp connected meanwhile (a load on another thread)
        return f"no RPC answer within {timeout:g} s (busy serving another client, or not a ggml-rpc worker)"
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    if major != RPC_PROTO_MAJOR or minor > RPC_PROTO_MINOR:
        return (f"it speaks RPC protocol {major}.{minor}.{patch}, this llama.cpp {RPC_PROTO_MAJOR}.{RPC_PROTO_MINOR}"
                ".x: run the same llama-cpp-python version on both machines")
    return None


# ---- the devices ---------------------------------------------------------------------------------

def _device(g: _Ggml, dev: int) -> Device:
    name = (g.dev_name(dev) or b"").decode()
    description = (g.dev_description(dev) or b"").decode()
    rpc = g.reg_of(dev) == "RPC"
    kind = "RPC" if rpc else _KINDS.get(g.dev_type(dev), str(g.dev_type(dev)))
    if rpc:
        # the name of its buffers ("RPC<index on the worker>[endpoint]"), as llama.cpp's load log and
        # buffer report say it, and stable whatever order the workers were added in; llama.cpp's own
        # device name ("RPC<n>", numbered across workers in the order added) is neither
        earlier = [g.dev_get(i) for i in range(g.dev_count())]
        index = [d for d in earlier if g.reg_of(d) == "RPC" and g.dev_description(d) == description.encode()].index(dev)
        name = f"RPC{index}[{description}]"
    if rpc and probe(description) is not None:
        return Device(name, description, kind, 0, 0, dev, reachable=False)
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    g.dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
    return Device(name, description, kind, free.value, total.value, dev)


def devices() -> list[Device]:
    """Every device in the registry's order, memory read now."""
    g = _ggml()
    with _lock:
        _add_env_servers()
        return [_device(g, g.dev_get(i)) for i in range(g.dev_count())]


def offload_devices() -> list[Device]:
    """The devices llama.cpp offloads layers to when ``llama_model_params.devices`` is NULL, in its
    order (``llama_prepare_model_devices``, layer split): RPC devices first (fewer network transfers),
    then GPUs, skipping a GPU whose PCI id an earlier one has (one card seen by two backends), then
    integrated GPUs only when there is no discrete one, all of one backend. CPU and ACCEL devices take
    what is not offloaded."""
    g = _ggml()
    with _lock:
        _add_env_servers()
        rpc, gpus, igpus = [], [], []
        gpu_ids: list[bytes] = []
        igpu_reg = None
        for i in range(g.dev_count()):
            dev = g.dev_get(i)
            kind = g.dev_type(dev)
            if kind == _TYPE_GPU and g.reg_of(dev) == "RPC":
                rpc.append(dev)
            elif kind == _TYPE_GPU:
                props = _DevProps()
                g.dev_get_props(dev, ctypes.byref(props))
                if props.device_id and props.device_id in gpu_ids:
                    continue
                if props.device_id:
                    gpu_ids.append(props.device_id)
                gpus.append(dev)
            elif kind == _TYPE_IGPU and (igpu_reg is None or g.dev_backend_reg(dev) == igpu_reg):
                igpu_reg = g.dev_backend_reg(dev)
                igpus.append(dev)
        chosen = rpc + gpus + ([] if gpus else igpus)
        return [_device(g, dev) for dev in chosen]


def cpu_device() -> Device:
    """The CPU device: system RAM, where every layer that is not offloaded lives."""
    g = _ggml()
    with _lock:
        dev = g.dev_by_type(_TYPE_CPU)
        if not dev:
            raise EngineError("llama.cpp has no CPU device")
        return _device(g, dev)


# ---- RPC workers ---------------------------------------------------------------------------------

def add_rpc_server(endpoint: str) -> list[Device]:
    """Make the worker at ``endpoint`` ("host:port") llama.cpp devices, as ``llama-server --rpc`` does;
    returns the devices it added. Adding one already added (by any spelling of the same address)
    returns its devices again and adds nothing: two clients of one worker would wait on each other.

    Call it while no model loads: ggml's registry is a plain list that a load reads without a lock."""
    endpoint = endpoint.strip()
    host, port = parse_endpoint(endpoint)
    g = _ggml()
    with _lock:
        ip = _resolve(endpoint, host)
        for known, address in _servers.items():
            if address == (ip, port):
                return _server_devices(g, known)
        add = g.rpc_add_server()
        if add is None:
            raise EngineError(f"cannot add RPC worker {endpoint}: this llama.cpp build has no RPC backend: reinstall "
                              "llama-cpp-python with CMAKE_ARGS=\"-DGGML_RPC=ON\" (the Makefile's default)")
        why = probe(endpoint)
        if why is not None:
            raise EngineError(f"RPC worker {endpoint} does not answer: {why}")
        reg = add(endpoint.encode())
        if not reg:
            raise EngineError(f"RPC worker {endpoint} serves no devices")
        g.register(reg)
        _servers[endpoint] = (ip, port)
        return _server_devices(g, endpoint)


def _server_devices(g: _Ggml, endpoint: str) -> list[Device]:
    return [d for d in devices() if d.kind == "RPC" and d.description == endpoint]


def rpc_servers() -> list[str]:
    """The workers added so far (``OLLAMA_MAGIC_RPC``'s included), as they were given."""
    with _lock:
        _add_env_servers()
        return list(_servers)


def dead_rpc_servers() -> list[str]:
    """The added workers that do not answer now. A load with ``llama_model_params.devices`` NULL reads
    every RPC device's memory and aborts on a dead one, so such a load must list its devices."""
    return [endpoint for endpoint in rpc_servers() if probe(endpoint) is not None]


# ---- a worker that dies while in use -------------------------------------------------------------

#: what ggml-rpc's client aborts with when a worker fails (RPC_STATUS_ASSERT, rpc_dispatcher::start)
RPC_ABORTS = ("Remote RPC server crashed", "Failed to connect to", "RPC handshake failed")
_ABORT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_abort_listeners: list[Callable[[str, list[str]], None]] = []
_abort_guard: Any = None


def on_rpc_abort(listener: Callable[[str, list[str]], None]) -> None:
    """Keep the process alive when a worker dies while llama.cpp uses it, and call ``listener(message,
    dead_endpoints)`` from the failing thread.

    ggml-rpc aborts the whole process there (``GGML_ABORT`` in its dispatcher thread). ggml calls the
    abort callback (``ggml_set_abort_callback``) just before ``abort()``; for ggml-rpc's messages this
    one tells the listeners which workers no longer answer, then parks the failing thread for good, so
    ``abort()`` never runs. What that costs, measured with a worker killed mid-decode: the thread
    that was in ``llama_decode`` for a model on that worker waits forever (its model can never be
    used or freed again: freeing would wait on the parked thread too), so the engine must fail that
    model's requests itself and forget the model; models on other devices keep working, provided
    their loads name their devices (a load with ``devices`` NULL reads every RPC device and would
    wait on the dead one). Any other abort (a GGML_ASSERT) still ends the process, as before."""
    global _abort_guard
    with _lock:
        _abort_listeners.append(listener)
        if _abort_guard is not None:
            return
        import llama_cpp

        base = _library(Path(llama_cpp.__file__).parent / "lib", "ggml-base")
        base.ggml_set_abort_callback.restype = ctypes.c_void_p
        base.ggml_set_abort_callback.argtypes = [_ABORT_CALLBACK]
        _abort_guard = _ABORT_CALLBACK(_on_abort)  # kept: ggml holds the pointer for the process's life
        base.ggml_set_abort_callback(_abort_guard)


def _on_abort(message: bytes | None) -> None:
    text = (message or b"").decode(errors="replace")
    if not any(words in text for words in RPC_ABORTS):
        sys.stderr.write(f"{text}\n")  # ggml prints it itself only when no callback is set
        sys.stderr.flush()
        return  # ggml aborts as it always did
    try:
        # not dead_rpc_servers(): its lock may be held by a thread that waits on this one
        dead = [endpoint for endpoint in list(_servers) if probe(endpoint) is not None]
        log.error("an RPC worker failed (%s): %s no longer answer%s; the request on it cannot finish",
                  text.rsplit(": ", 1)[-1], ", ".join(dead) or "none of the workers", "s" * (len(dead) == 1))
        for listener in list(_abort_listeners):
            listener(text, dead)
    finally:
        threading.Event().wait()  # park: returning would let ggml call abort()


__all__ = [
    "PROBE_TIMEOUT",
    "RPC_PROTO_MAJOR",
    "RPC_PROTO_MINOR",
    "Device",
    "add_rpc_server",
    "cpu_device",
    "dead_rpc_servers",
    "devices",
    "hello",
    "offload_devices",
    "on_rpc_abort",
    "parse_endpoint",
    "probe",
    "rpc_servers",
    "rpc_supported",
]
