"""Kept for callers of the old hooks: each ``%%chat`` feature now lives in its own module in
``features/`` (flags, checks and effect), listed once in ``features.FEATURES``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .features import FEATURES, Cell
from .features import over as _over
from .features.notebook_context import with_context as _with_context
from .features.output import after_reply, schema_of

if TYPE_CHECKING:
    from .session import NotebookSession


def validate(args: argparse.Namespace) -> None:
    """Flags that only mean something together: every feature's check."""
    for feature in FEATURES:
        feature.check(args)


def over(session: NotebookSession, args: argparse.Namespace, text: str, namespace: Mapping[str, Any],
         local_ns: Mapping[str, Any] | None, model: str, options: dict[str, Any]) -> Any:
    """``--over EXPR``: the message for every row; nothing enters the thread."""
    _over.FEATURE.check(args)
    return _over.FEATURE.answer(args, Cell(session, session.shell, text, model, options, namespace, local_ns))


def with_context(session: NotebookSession, args: argparse.Namespace, text: str, namespace: Mapping[str, Any],
                 model: str, options: Mapping[str, Any]) -> str:
    return _with_context(session, args.context, args.vars, text, namespace, model, options)


def tools(args: argparse.Namespace, namespace: Mapping[str, Any]) -> list[Callable[..., Any]]:
    if not args.tools:
        return []
    from .tools import resolve

    return resolve(args.tools, namespace)


def confirm(args: argparse.Namespace) -> Callable[[str], bool] | None:
    if not args.confirm:
        return None
    from .tools import ask_before

    return ask_before


__all__ = ["after_reply", "confirm", "over", "schema_of", "tools", "validate", "with_context"]
