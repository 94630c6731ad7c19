"""``%ollama rpc``: llama.cpp's devices, and other machines' (RPC workers) added to them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import pandas as pd

from ...errors import InvalidRequest
from ...formatting import human_bytes
from . import Text, parse, verb

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ...engine.devices import Device
    from ..session import NotebookSession

DEVICE_COLUMNS = ["device", "kind", "description", "free", "total"]
NO_WORKERS = ("no RPC workers: start one on another machine with `ollama-magic rpc-server --host ADDRESS` "
              "and add it with %ollama rpc add ADDRESS:50052")


def device_rows(listed: list[Device]) -> list[list[str]]:
    """One row per device, memory as Ollama writes sizes; a worker that does not answer says so."""
    return [[d.name, d.kind, d.description, human_bytes(d.free) if d.reachable else "not answering",
             human_bytes(d.total) if d.reachable else ""] for d in listed]


@verb("rpc", "[add HOST:PORT...]: llama.cpp's devices (a DataFrame), RPC workers on other machines included")
def rpc(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> pd.DataFrame | Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("action", nargs="?", choices=["add"])
        p.add_argument("endpoints", nargs="*", metavar="HOST:PORT")

    args = parse("rpc", argv, setup)
    if session.remote is not None:
        raise InvalidRequest(f"connected to {session.remote.host}: RPC workers belong to the engine that loads the "
                             "models; start that server with OLLAMA_MAGIC_RPC=HOST:PORT,... (or %ollama disconnect)")
    from ...engine import devices

    if args.action is None:
        if args.endpoints:
            raise InvalidRequest("%ollama rpc lists the devices; %ollama rpc add HOST:PORT adds a worker")
        listed = devices.devices()
        if not devices.rpc_servers():
            print(NO_WORKERS)
        return pd.DataFrame(device_rows(listed), columns=DEVICE_COLUMNS)
    if not args.endpoints:
        raise InvalidRequest("%ollama rpc add HOST:PORT [HOST:PORT...]: which worker?")
    lines = []
    for endpoint in args.endpoints:
        added = devices.add_rpc_server(endpoint)
        shown = ", ".join(f"{d.name} ({human_bytes(d.free)} free of {human_bytes(d.total)})" for d in added)
        lines.append(f"{endpoint}: {shown}")
    return Text("\n".join(lines))


__all__ = ["DEVICE_COLUMNS", "device_rows", "rpc"]
