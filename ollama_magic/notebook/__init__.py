"""The notebook front end: magics, conversations, embeddings into DataFrames, display helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import NotebookSession


def current_session() -> NotebookSession:
    """The kernel's NotebookSession (the one the magics use): its ``backend``, default models,
    conversations and server, for code that wants them without a magic."""
    from .session import current  # imported on use: importing a notebook module stays cheap

    return current()


__all__ = ["current_session"]
