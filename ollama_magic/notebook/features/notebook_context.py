"""``--context N`` and ``--vars a,b``: the last cells and a summary of variables, in front of the message
(fitted to the model's context with its own tokenizer; see ``context.py``), shown collapsed."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Mapping

from ..chat import ChatTurn
from .base import Cell, Feature

if TYPE_CHECKING:
    from ..session import NotebookSession


def names(text: str) -> list[str]:
    """``a,b``: comma-separated Python names (``--vars``, ``--tools``)."""
    found = [n.strip() for n in text.split(",") if n.strip()]
    if not found or not all(n.isidentifier() for n in found):
        raise argparse.ArgumentTypeError(f"expected comma-separated names such as df,x, got {text!r}")
    return found


def with_context(session: NotebookSession, cells: int, variables: list[str], text: str,
                 namespace: Mapping[str, Any], model: str, options: Mapping[str, Any], *, spent: int = 0) -> str:
    """The message with the notebook context in front, shown collapsed; it gets the attached-material
    budget less ``spent``, what ``--docs`` sources already took of it."""
    if not cells and not variables:
        return text
    from IPython.display import display

    from ..context import SentWith, build_context, context_budget, token_counter

    backend = session.backend
    budget = context_budget(backend, model, options, spent=spent)
    context = build_context(session.shell, namespace, cells=cells, names=variables,
                            count_tokens=token_counter(backend, model), budget=budget)
    if context:
        display(SentWith(context))
    return context.wrap(text)


class NotebookContextFeature(Feature):
    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--context", type=int, default=0, metavar="N",
                            help="attach the code and text outputs of the last N cells (with --docs: in the "
                            "budget the sources leave)")
        parser.add_argument("--vars", type=names, default=[], metavar="A,B",
                            help="attach a compact summary of these variables (shape, dtypes, head; values truncated)")

    def apply(self, turn: ChatTurn, args: argparse.Namespace, cell: Cell) -> None:
        turn.text = with_context(cell.session, args.context, args.vars, turn.text, cell.namespace, cell.model,
                                 cell.options, spent=getattr(args, "docs_tokens", 0))


FEATURE = NotebookContextFeature()

__all__ = ["FEATURE", "names", "with_context"]
