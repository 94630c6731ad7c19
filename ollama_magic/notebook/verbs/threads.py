"""``%ollama`` verbs on this notebook's conversations: threads, history, reset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import Text, parse, verb

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..session import NotebookSession


@verb("threads", "this notebook's conversation threads")
def threads(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> pd.DataFrame:
    parse("threads", argv, lambda p: None)
    counts = session.conversations.threads(session.identity)
    return pd.DataFrame({"thread": list(counts), "messages": list(counts.values())}, columns=["thread", "messages"])


@verb("history", "[-t THREAD] [--thinking] [--df] [--export PATH.md|PATH.json]")
def history(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Any:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("-t", "--thread", default="main")
        p.add_argument("--thinking", action="store_true", help="show the models' thinking traces (hidden by default)")
        p.add_argument("--df", action="store_true", help="a DataFrame instead of a transcript")
        p.add_argument("--export", metavar="PATH")

    args = parse("history", argv, setup)
    store, identity = session.conversations, session.identity
    if args.export:
        path = store.export(identity, args.thread, Path(args.export).expanduser())
        return Text(f"exported thread {args.thread!r} to {path}")
    if args.df:
        return store.history_frame(identity, args.thread)
    from ..conversations import to_markdown
    from IPython.display import Markdown

    messages = store.thread(identity, args.thread)
    return Markdown(to_markdown(messages, thinking=args.thinking)) if messages else Text(f"thread {args.thread!r} is empty")


@verb("reset", "[-t THREAD | --all]: forget a thread (or all of this notebook's)")
def reset(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Text:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("-t", "--thread", default="main")
        p.add_argument("--all", action="store_true")

    args = parse("reset", argv, setup)
    if args.all:
        session.conversations.reset_all(session.identity)
        return Text("all threads of this notebook reset")
    session.conversations.reset(session.identity, args.thread)
    return Text(f"thread {args.thread!r} reset")


__all__: list[str] = []
