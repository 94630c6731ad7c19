"""``%ollama VERB ...``: model management, threads, backend and server, one small function per verb.

Tables come back as DataFrames (Jupyter renders them; code can filter them); texts as plain strings
printed once. Every verb goes through the session's backend, in-kernel or remote alike.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from IPython.core.error import UsageError

from .. import envconfig
from ..defaults import EMBEDDED_MODELS, require_embedded
from ..errors import InvalidRequest, OllamaMagicError
from ..formatting import (MODEL_COLUMNS, PS_HEADER, ProgressBars, byte_progress, gpu_layers, gpu_offload, model_rows,
                          processor, ps_rows, show_sections)
from ..hosts import DEFAULT_HOST, DEFAULT_PORT
from ..store.modelfile import create_fields
from ..store.modelfile import parse as parse_modelfile
from ..store.modelfile import read as read_modelfile
from .arguments import UsageParser

VERBS: dict[str, tuple[str, Callable[..., Any]]] = {}


def verb(name: str, summary: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        VERBS[name] = (summary, fn)
        return fn

    return register


def _parse(prog: str, argv: list[str], setup: Callable[[argparse.ArgumentParser], None]) -> argparse.Namespace:
    parser = UsageParser(prog=f"%ollama {prog}", add_help=False)
    setup(parser)
    return parser.parse_args(argv)


def run(session: Any, argv: list[str], shell: Any = None) -> Any:
    if not argv or argv[0] in ("help", "-h", "--help"):
        return help_text()
    name, rest = argv[0], argv[1:]
    if name not in VERBS:
        raise UsageError(f"unknown verb {name!r}. {help_text()}")
    return VERBS[name][1](session, rest, shell)


class _Text(str):
    """A text result that shows as itself (no quotes) when it is the cell's value."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


class _Url(_Text):
    """The server's URL as a value (``url = %ollama serve``), shown as a sentence."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"Ollama API served at {self} (stop it with %ollama stop-server)")


def help_text() -> _Text:
    width = max(len(v) for v in VERBS)
    lines = ["%ollama VERB [ARGS]:"] + [f"  {name.ljust(width)}  {summary}" for name, (summary, _) in VERBS.items()]
    return _Text("\n".join(lines))


# ---- models ----------------------------------------------------------------------------------------

@verb("list", "installed models (a DataFrame)")
def list_models(session: Any, argv: list[str], shell: Any) -> pd.DataFrame:
    _parse("list", argv, lambda p: None)
    return pd.DataFrame(model_rows(session.backend.list().models), columns=MODEL_COLUMNS)


@verb("setup", f"[NAME...]: register the embedded models ({', '.join(EMBEDDED_MODELS)}; or tiny-vision) if missing")
def setup(session: Any, argv: list[str], shell: Any) -> _Text:
    args = _parse("setup", argv, lambda p: p.add_argument("names", nargs="*"))
    lines = []
    for name in [require_embedded(n).name for n in args.names] or list(EMBEDDED_MODELS):
        # Engine.pull registers them; a remote Ollama downloads them
        bars = ProgressBars(sys.stdout, lines=False)
        bars.follow(session.backend.pull(name, stream=True))
        if any(s.startswith("registering ") for s in bars.seen):
            lines.append(f"{name}: registered")
        elif any(" is installed" in s for s in bars.seen):
            lines.append(f"{name}: already installed")
        else:
            lines.append(f"{name}: pulled")
    return _Text("\n".join(lines))


@verb("pull", "NAME [--insecure]: get a model from its registry (registry.ollama.ai, hf.co/USER/REPO, host:port/ns/model)")
def pull(session: Any, argv: list[str], shell: Any) -> _Text:
    return _transfer(session, argv, "pull")


@verb("push", "NAME [--insecure]: send a model to the registry its name names (host/namespace/model:tag)")
def push(session: Any, argv: list[str], shell: Any) -> _Text:
    return _transfer(session, argv, "push")


def _transfer(session: Any, argv: list[str], verb_name: str) -> _Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        p.add_argument("--insecure", action="store_true", help="plain http, no TLS")

    args = _parse(verb_name, argv, setup)
    statuses = getattr(session.backend, verb_name)(args.name, insecure=args.insecure, stream=True)
    ProgressBars(sys.stdout).follow(statuses)
    return _Text(f"{verb_name}ed {args.name}")


@verb("ps", "models loaded now, where they run and until when")
def ps(session: Any, argv: list[str], shell: Any) -> pd.DataFrame:
    _parse("ps", argv, lambda p: None)
    return pd.DataFrame(ps_rows(session.backend.ps().models), columns=[h.lower() for h in PS_HEADER])


@verb("show", "NAME [--modelfile|--parameters|--template|--system|--license]")
def show(session: Any, argv: list[str], shell: Any) -> Any:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        for flag in ("modelfile", "parameters", "template", "system", "license"):
            p.add_argument(f"--{flag}", action="store_true")

    args = _parse("show", argv, setup)
    resp = session.backend.show(args.name)
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, flag):
            return _Text(getattr(resp, flag) or "")
    rows = [(title, key, value) for title, pairs in show_sections(resp) for key, value in pairs]
    return pd.DataFrame(rows, columns=["section", "key", "value"]).set_index(["section", "key"])


@verb("create", "NAME (-f MODELFILE | --from GGUF_OR_MODEL) [--system S] [--template T]")
def create(session: Any, argv: list[str], shell: Any) -> _Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("-f", "--file", help="a Modelfile")
        source.add_argument("--from", dest="source", help="a GGUF file, a safetensors directory or a model")
        p.add_argument("--system")
        p.add_argument("--template")

    args = _parse("create", argv, setup)
    fields: dict[str, Any] = {}
    if args.file:
        text, base_dir = read_modelfile(args.file)
        fields.update(create_fields(parse_modelfile(text), base_dir))
    else:
        fields["from_"] = args.source
    if args.system is not None:
        fields["system"] = args.system
    if args.template is not None:
        fields["template"] = args.template
    update, close = byte_progress("importing")
    try:
        for _status in session.backend.create(args.name, stream=True, on_bytes=update, **fields):
            pass
    finally:
        close()
    return _Text(f"created {args.name}")


@verb("cp", "SOURCE DESTINATION")
def copy(session: Any, argv: list[str], shell: Any) -> _Text:
    args = _parse("cp", argv, lambda p: (p.add_argument("source"), p.add_argument("destination")))
    session.backend.copy(args.source, args.destination)
    return _Text(f"copied {args.source} to {args.destination}")


@verb("rm", "NAME [NAME...]")
def remove(session: Any, argv: list[str], shell: Any) -> _Text:
    args = _parse("rm", argv, lambda p: p.add_argument("names", nargs="+"))
    for name in args.names:
        session.backend.delete(name)
    return _Text("deleted " + ", ".join(args.names))


@verb("load", "NAME [--keep-alive DURATION]")
def load(session: Any, argv: list[str], shell: Any) -> _Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        p.add_argument("--keep-alive", default=None, help="e.g. 10m, 1h, -1 (forever)")

    args = _parse("load", argv, setup)
    keep: Any = args.keep_alive
    if keep is not None and keep.lstrip("-").isdigit():
        keep = int(keep)
    session.backend.load(args.name, keep_alive=keep)
    return _Text(f"loaded {args.name}")


@verb("unload", "NAME")
def unload(session: Any, argv: list[str], shell: Any) -> _Text:
    args = _parse("unload", argv, lambda p: p.add_argument("name"))
    was_loaded = session.backend.unload(args.name)
    return _Text(f"unloaded {args.name}" if was_loaded else f"{args.name} was not loaded")


@verb("use", "NAME [--embed]: the default model of %%chat (or of %embed)")
def use(session: Any, argv: list[str], shell: Any) -> _Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        p.add_argument("--embed", action="store_true")

    args = _parse("use", argv, setup)
    name = session.use(args.name, embedding=args.embed)
    return _Text(f"{'%embed' if args.embed else '%%chat'} now uses {name}")


@verb("panel", "ipywidgets panels: models, running, create, chat, embeddings")
def panel(session: Any, argv: list[str], shell: Any) -> Any:
    _parse("panel", argv, lambda p: None)
    from .widgets import OllamaPanel

    return OllamaPanel(session)


# ---- backend and server --------------------------------------------------------------------------

@verb("status", "backend, default models, notebook, server, GPU offload and what is loaded")
def status(session: Any, argv: list[str], shell: Any) -> _Text:
    _parse("status", argv, lambda p: None)
    s = session.status()
    loaded = [f"{m.model} ({gpu_layers(m) or '?'} layers on the GPU, {processor(m.size or 0, m.size_vram or 0)})"
              for m in s.loaded or []]
    loaded_text = ("; ".join(loaded) or "nothing") if s.loaded is not None else "not reported by this server"
    return _Text("\n".join([
        f"backend:      {s.backend}", f"chat model:   {s.chat_model}", f"embed model:  {s.embed_model}",
        f"notebook:     {s.notebook}", f"HTTP server:  {s.server_url or 'not running'}",
        f"GPU offload:  {gpu_offload(s.gpu_offload)}", f"loaded:       {loaded_text}",
        "environment (this kernel's; see README):", envconfig.listing(),
    ]))


@verb("connect", "URL [--openai|--ollama] [--api-key-env VAR]: send every call to a server (Ollama or OpenAI API)")
def connect(session: Any, argv: list[str], shell: Any) -> _Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("url")
        api = p.add_mutually_exclusive_group()
        api.add_argument("--openai", dest="api", action="store_const", const="openai",
                         help="an OpenAI-compatible /v1 server (vLLM, llama-server, LM Studio, OpenAI)")
        api.add_argument("--ollama", dest="api", action="store_const", const="ollama")
        p.add_argument("--api-key-env", metavar="VAR", help="the environment variable holding the API key")

    args = _parse("connect", argv, setup)
    description = session.connect(args.url, api=args.api or "auto", api_key_env=args.api_key_env)
    return _Text(f"connected to {session.remote.host} ({description})")


@verb("disconnect", "back to the in-kernel engine")
def disconnect(session: Any, argv: list[str], shell: Any) -> _Text:
    _parse("disconnect", argv, lambda p: None)
    return _Text("back to the in-kernel engine" if session.disconnect() else "already on the in-kernel engine")


@verb("serve", "[--port N] [--host H]: serve the in-kernel engine over HTTP (Ollama's API)")
def serve(session: Any, argv: list[str], shell: Any) -> _Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("--port", type=int, default=DEFAULT_PORT)
        p.add_argument("--host", default=DEFAULT_HOST)

    args = _parse("serve", argv, setup)
    return _Url(session.serve(args.port, args.host))


@verb("stop-server", "stop the HTTP server")
def stop_server(session: Any, argv: list[str], shell: Any) -> _Text:
    _parse("stop-server", argv, lambda p: None)
    return _Text("server stopped" if session.stop_server() else "no server was running")


# ---- conversations -------------------------------------------------------------------------------

@verb("threads", "this notebook's conversation threads")
def threads(session: Any, argv: list[str], shell: Any) -> pd.DataFrame:
    _parse("threads", argv, lambda p: None)
    counts = session.conversations.threads(session.identity)
    return pd.DataFrame({"thread": list(counts), "messages": list(counts.values())}, columns=["thread", "messages"])


@verb("history", "[-t THREAD] [--thinking] [--df] [--export PATH.md|PATH.json]")
def history(session: Any, argv: list[str], shell: Any) -> Any:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("-t", "--thread", default="main")
        p.add_argument("--thinking", action="store_true", help="show the models' thinking traces (hidden by default)")
        p.add_argument("--df", action="store_true", help="a DataFrame instead of a transcript")
        p.add_argument("--export", metavar="PATH")

    args = _parse("history", argv, setup)
    store, identity = session.conversations, session.identity
    if args.export:
        path = store.export(identity, args.thread, Path(args.export).expanduser())
        return _Text(f"exported thread {args.thread!r} to {path}")
    if args.df:
        return store.history_frame(identity, args.thread)
    from .conversations import to_markdown
    from IPython.display import Markdown

    messages = store.thread(identity, args.thread)
    return Markdown(to_markdown(messages, thinking=args.thinking)) if messages else _Text(f"thread {args.thread!r} is empty")


class TokenCount(_Text):
    """``%ollama tokens``: how many tokens a text is for a model, and the pieces it splits into."""

    ids: list[int]
    pieces: list[str]

    def __new__(cls, model: str, ids: list[int], pieces: list[str]) -> "TokenCount":
        shown = "|".join(p.replace("\n", "\\n") for p in pieces)
        value = super().__new__(cls, f"{len(ids)} tokens for {model}: {shown}")
        value.ids, value.pieces = ids, pieces
        return value

    def __len__(self) -> int:
        return len(self.ids)


@verb("tokens", "[-m MODEL] TEXT|VAR: count a text's tokens and show its pieces")
def tokens(session: Any, argv: list[str], shell: Any) -> TokenCount:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("-m", "--model")
        p.add_argument("text", nargs="+")

    args = _parse("tokens", argv, setup)
    text = " ".join(args.text)
    namespace = getattr(shell, "user_ns", None) or {}
    if len(args.text) == 1 and text.isidentifier() and text in namespace:
        value = namespace[text]
        if not isinstance(value, str):
            raise InvalidRequest(f"{text} is a {type(value).__name__}, not a str: %ollama tokens counts text")
        text = value
    model = args.model or session.chat_model
    ids = list(session.backend.tokenize(model, text).tokens)
    pieces = [session.backend.detokenize(model, [i]).content for i in ids]
    return TokenCount(model, ids, pieces)


@verb("reset", "[-t THREAD | --all]: forget a thread (or all of this notebook's)")
def reset(session: Any, argv: list[str], shell: Any) -> _Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("-t", "--thread", default="main")
        p.add_argument("--all", action="store_true")

    args = _parse("reset", argv, setup)
    if args.all:
        session.conversations.reset_all(session.identity)
        return _Text("all threads of this notebook reset")
    session.conversations.reset(session.identity, args.thread)
    return _Text(f"thread {args.thread!r} reset")


def model_names(session: Any) -> list[str]:
    """For tab completion: installed model names (nothing if the backend cannot answer)."""
    try:
        return [m.model for m in session.backend.list().models]
    except (OllamaMagicError, OSError):
        return []


__all__ = ["VERBS", "help_text", "model_names", "run"]
