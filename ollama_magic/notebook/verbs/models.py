"""``%ollama`` verbs on models: list, setup, pull, push, ps, show, create, cp, rm, load, unload, use."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import pandas as pd

from ...defaults import EMBEDDED_MODELS, setup_models
from ...errors import OllamaMagicError
from ...formatting import EMPTY_STORE_HINT, MODEL_COLUMNS, PS_HEADER, ProgressBars, byte_progress, model_rows, ps_rows, show_sections
from ...store.modelfile import create_fields
from ...store.modelfile import parse as parse_modelfile
from ...store.modelfile import read as read_modelfile
from ...store.quantize import QUANTIZE_HELP
from . import Text, parse, verb

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..session import NotebookSession


@verb("list", "installed models (a DataFrame)")
def list_models(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> pd.DataFrame:
    parse("list", argv, lambda p: None)
    models = session.backend.list().models
    if not models:
        print(EMPTY_STORE_HINT.format(cmd="%ollama"))
    return pd.DataFrame(model_rows(models), columns=MODEL_COLUMNS)


@verb("setup", f"[NAME...]: register the embedded models ({', '.join(EMBEDDED_MODELS)}; or tiny-vision) if missing")
def setup(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    args = parse("setup", argv, lambda p: p.add_argument("names", nargs="*"))
    # Engine.pull registers them; a remote Ollama downloads them
    done = setup_models(session.backend, args.names, lambda: ProgressBars(sys.stdout, lines=False))
    return Text("\n".join(f"{name}: {outcome}" for name, outcome in done))


@verb("pull", "NAME [--insecure]: get a model from its registry (registry.ollama.ai, hf.co/USER/REPO, host:port/ns/model)")
def pull(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    return _transfer(session, argv, "pull")


@verb("push", "NAME [--insecure]: send a model to the registry its name names (host/namespace/model:tag)")
def push(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    return _transfer(session, argv, "push")


def _transfer(session: NotebookSession, argv: list[str], verb_name: str) -> Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        p.add_argument("--insecure", action="store_true", help="plain http, no TLS")

    args = parse(verb_name, argv, setup)
    statuses = getattr(session.backend, verb_name)(args.name, insecure=args.insecure, stream=True)
    ProgressBars(sys.stdout).follow(statuses)
    return Text(f"{verb_name}ed {args.name}")


@verb("ps", "models loaded now, where they run and until when")
def ps(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> pd.DataFrame:
    parse("ps", argv, lambda p: None)
    return pd.DataFrame(ps_rows(session.backend.ps().models), columns=[h.lower() for h in PS_HEADER])


@verb("show", "NAME [--modelfile|--parameters|--template|--system|--license]")
def show(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Any:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        for flag in ("modelfile", "parameters", "template", "system", "license"):
            p.add_argument(f"--{flag}", action="store_true")

    args = parse("show", argv, setup)
    resp = session.backend.show(args.name)
    for flag in ("modelfile", "parameters", "template", "system", "license"):
        if getattr(args, flag):
            return Text(getattr(resp, flag) or "")
    rows = [(title, key, value) for title, pairs in show_sections(resp) for key, value in pairs]
    return pd.DataFrame(rows, columns=["section", "key", "value"]).set_index(["section", "key"])


@verb("create", "NAME (-f MODELFILE | --from GGUF_OR_MODEL) [--system S] [--template T] [--quantize TYPE]")
def create(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("-f", "--file", help="a Modelfile")
        source.add_argument("--from", dest="source", help="a GGUF file, a safetensors directory or a model")
        p.add_argument("--system")
        p.add_argument("--template")
        p.add_argument("-q", "--quantize", help=QUANTIZE_HELP)

    args = parse("create", argv, setup)
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
    if args.quantize:
        fields["quantize"] = args.quantize
    update, close = byte_progress("importing")
    bars = ProgressBars(lines=False)  # a quantize's progress: a bar
    try:
        for status in session.backend.create(args.name, stream=True, on_bytes=update, **fields):
            bars(status)
    finally:
        close()
        bars.close()
    return Text(f"created {args.name}")


@verb("cp", "SOURCE DESTINATION")
def copy(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    args = parse("cp", argv, lambda p: (p.add_argument("source"), p.add_argument("destination")))
    session.backend.copy(args.source, args.destination)
    return Text(f"copied {args.source} to {args.destination}")


@verb("rm", "NAME [NAME...]")
def remove(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    args = parse("rm", argv, lambda p: p.add_argument("names", nargs="+"))
    for name in args.names:
        session.backend.delete(name)
    return Text("deleted " + ", ".join(args.names))


@verb("load", "NAME [--keep-alive DURATION]")
def load(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        p.add_argument("--keep-alive", default=None, help="e.g. 10m, 1h, -1 (forever)")

    args = parse("load", argv, setup)
    keep: Any = args.keep_alive
    if keep is not None and keep.lstrip("-").isdigit():
        keep = int(keep)
    session.backend.load(args.name, keep_alive=keep)
    return Text(f"loaded {args.name}")


@verb("unload", "NAME")
def unload(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    args = parse("unload", argv, lambda p: p.add_argument("name"))
    was_loaded = session.backend.unload(args.name)
    return Text(f"unloaded {args.name}" if was_loaded else f"{args.name} was not loaded")


@verb("use", "NAME [--embed]: the default model of %%chat (or of %embed)")
def use(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        p.add_argument("--embed", action="store_true")

    args = parse("use", argv, setup)
    name = session.use(args.name, embedding=args.embed)
    return Text(f"{'%embed' if args.embed else '%%chat'} now uses {name}")


def model_names(session: NotebookSession) -> list[str]:
    """For tab completion: installed model names (nothing if the backend cannot answer)."""
    try:
        return [m.model for m in session.backend.list().models]
    except (OllamaMagicError, OSError):
        return []


__all__ = ["model_names"]
