"""What a ``%%chat`` feature is: its flags, the checks between them, and its effect on the turn.

A feature is one module in this package holding one :class:`Feature`; ``features/__init__.py`` lists
them once, and the magic calls each hook in that order (jupysql's one-module-per-command pattern).
Nothing here knows any feature.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..chat import ChatTurn
    from ..session import NotebookSession

#: What :meth:`Feature.answer` returns when the feature does not answer the cell itself.
NOT_ANSWERED: Any = object()


@dataclass
class Cell:
    """What a feature may read of the running ``%%chat`` cell."""

    session: NotebookSession
    shell: InteractiveShell
    #: The message as written (before ``{name}`` is filled in).
    text: str
    model: str
    options: dict[str, Any]
    #: The user's variables (the shell's namespace with the cell's local one over it).
    namespace: Mapping[str, Any] = field(default_factory=dict)
    local_ns: Mapping[str, Any] | None = None


class Feature:
    """A ``%%chat`` feature; every hook does nothing unless the feature overrides it."""

    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        """Declare the feature's flags."""

    def check(self, args: argparse.Namespace) -> None:
        """Flags that only mean something together: one clear error instead of being silently ignored."""

    def answer(self, args: argparse.Namespace, cell: Cell) -> Any:
        """The cell's value when this feature answers it instead of a turn (``--over``), else NOT_ANSWERED."""
        return NOT_ANSWERED

    def apply(self, turn: ChatTurn, args: argparse.Namespace, cell: Cell) -> None:
        """Shape the turn before it runs."""

    def after(self, reply: Any, args: argparse.Namespace, cell: Cell) -> None:
        """Act on the reply once it is in."""


__all__ = ["NOT_ANSWERED", "Cell", "Feature"]
