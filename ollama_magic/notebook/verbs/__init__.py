"""``%ollama VERB ...``: the verb registry (jupysql's ``router``), and nothing else.

Each group of verbs is a module beside this one (``models``, ``server``, ``threads``, ``tokens``, ``rpc``,
``panel``; ``errorhelp`` registers ``fix``) that registers its verbs here with :func:`verb`; the
extension imports those modules, so the arrows point down and this module imports no feature.
Tables come back as DataFrames (Jupyter renders them; code can filter them); texts as plain strings
printed once. Every verb goes through the session's backend, in-kernel or remote alike.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Callable

from IPython.core.error import UsageError

from ..arguments import UsageParser

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..session import NotebookSession

#: A verb: (the session, the words after the verb, the shell) -> the cell's value.
Verb = Callable[["NotebookSession", list[str], "InteractiveShell | None"], Any]

VERBS: dict[str, tuple[str, Verb]] = {}


def verb(name: str, summary: str) -> Callable[[Verb], Verb]:
    """Register ``%ollama NAME``; ``summary`` is its line in ``%ollama help``."""
    def register(fn: Verb) -> Verb:
        VERBS[name] = (summary, fn)
        return fn

    return register


def parse(prog: str, argv: list[str], setup: Callable[[argparse.ArgumentParser], Any]) -> argparse.Namespace:
    """A verb's arguments: a mistake is one UsageError line."""
    parser = UsageParser(prog=f"%ollama {prog}", add_help=False)
    setup(parser)
    return parser.parse_args(argv)


def run(session: NotebookSession, argv: list[str], shell: InteractiveShell | None = None) -> Any:
    if not argv or argv[0] in ("help", "-h", "--help"):
        return help_text()
    name, rest = argv[0], argv[1:]
    if name not in VERBS:
        raise UsageError(f"unknown verb {name!r}. {help_text()}")
    return VERBS[name][1](session, rest, shell)


class Text(str):
    """A text result that shows as itself (no quotes) when it is the cell's value."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def help_text() -> Text:
    width = max(len(v) for v in VERBS)
    lines = ["%ollama VERB [ARGS]:"] + [f"  {name.ljust(width)}  {summary}" for name, (summary, _) in VERBS.items()]
    return Text("\n".join(lines))


__all__ = ["VERBS", "Text", "Verb", "help_text", "parse", "run", "verb"]
