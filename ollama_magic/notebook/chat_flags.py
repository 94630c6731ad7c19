"""The ``%%chat`` flags of the notebook-context features (issue 17), kept apart from the core flags
so each feature's module owns its behaviour and this file only names its switches."""

from __future__ import annotations

import argparse


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or not all(n.isidentifier() for n in names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names such as df,x, got {text!r}")
    return names


def add_context_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-history", type=int, metavar="N", help="send at most the last N exchanges of the thread")
    p.add_argument("--context", type=int, default=0, metavar="N",
                   help="attach the code and text outputs of the last N cells")
    p.add_argument("--vars", type=_names, default=[], metavar="A,B",
                   help="attach a compact summary of these variables (shape, dtypes, head; values truncated)")
    p.add_argument("--over", metavar="EXPR",
                   help="ask the message for every row of this column ({text} is the row); returns a Series")
    p.add_argument("--schema", metavar="JSON|VAR",
                   help="with -f json: a JSON schema the reply must follow (JSON, or a variable holding a dict or a pydantic model)")
    p.add_argument("--workers", type=int, default=4, help="with --over: requests in flight at once (default 4)")
    p.add_argument("--tools", type=_names, default=[], metavar="F,G",
                   help="notebook functions the model may call; the calls run in the kernel")
    p.add_argument("--confirm", action="store_true", help="with --tools: ask before each call runs")
    p.add_argument("--tool-choice", choices=("auto", "required"), default="auto",
                   help="with --tools: required makes the first answer a tool call (for small models)")


__all__ = ["add_context_flags"]
