"""The notebook front end: magics, conversations, embeddings into DataFrames, display helpers."""

from __future__ import annotations

from typing import Any


def current_session() -> Any:
    """The kernel's NotebookSession (the one the magics use): its ``backend``, default models,
    conversations and server, for code that wants them without a magic."""
    from IPython import get_ipython

    from .extension import session_of

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("current_session() needs IPython or Jupyter: run it in a notebook")
    return session_of(shell)


__all__ = ["current_session"]
