"""``%ollama`` verbs on the backend and the HTTP server: status, connect, disconnect, serve, stop-server."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ... import envconfig
from ...formatting import device_bytes, gpu_layers, gpu_offload, processor
from ...hosts import DEFAULT_HOST, DEFAULT_PORT
from . import Text, parse, verb

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..session import NotebookSession


class Url(Text):
    """The server's URL as a value (``url = %ollama serve``), shown as a sentence."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"Ollama API served at {self} (stop it with %ollama stop-server)")


@verb("status", "backend, default models, notebook, server, GPU offload and what is loaded")
def status(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    parse("status", argv, lambda p: None)
    s = session.status()
    loaded = [f"{m.model} ({gpu_layers(m) or '?'} layers on devices, {processor(m.size or 0, m.size_vram or 0)}"
              + (f": {device_bytes(m)}" if device_bytes(m) else "") + ")"
              + "".join(f"; {note}" for note in (getattr(m, "notes", None) or []))
              for m in s.loaded or []]
    loaded_text = ("; ".join(loaded) or "nothing") if s.loaded is not None else "not reported by this server"
    return Text("\n".join([
        f"backend:      {s.backend}", f"chat model:   {s.chat_model}", f"embed model:  {s.embed_model}",
        f"notebook:     {s.notebook}", f"HTTP server:  {s.server_url or 'not running'}",
        f"GPU offload:  {gpu_offload(s.gpu_offload)}", f"loaded:       {loaded_text}",
        "environment (this kernel's; see README):", envconfig.listing(),
    ]))


@verb("connect", "URL [--openai|--ollama] [--api-key-env VAR]: send every call to a server (Ollama or OpenAI API)")
def connect(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("url")
        api = p.add_mutually_exclusive_group()
        api.add_argument("--openai", dest="api", action="store_const", const="openai",
                         help="an OpenAI-compatible /v1 server (vLLM, llama-server, LM Studio, OpenAI)")
        api.add_argument("--ollama", dest="api", action="store_const", const="ollama")
        p.add_argument("--api-key-env", metavar="VAR", help="the environment variable holding the API key")

    args = parse("connect", argv, setup)
    description = session.connect(args.url, api=args.api or "auto", api_key_env=args.api_key_env)
    return Text(f"connected to {session.remote.host} ({description})")


@verb("disconnect", "back to the in-kernel engine")
def disconnect(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    parse("disconnect", argv, lambda p: None)
    return Text("back to the in-kernel engine" if session.disconnect() else "already on the in-kernel engine")


@verb("serve", "[--port N] [--host H]: serve the in-kernel engine over HTTP (Ollama's API)")
def serve(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("--port", type=int, default=DEFAULT_PORT)
        p.add_argument("--host", default=DEFAULT_HOST)

    args = parse("serve", argv, setup)
    return Url(session.serve(args.port, args.host))


@verb("stop-server", "stop the HTTP server")
def stop_server(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    parse("stop-server", argv, lambda p: None)
    return Text("server stopped" if session.stop_server() else "no server was running")


__all__ = ["Url"]
