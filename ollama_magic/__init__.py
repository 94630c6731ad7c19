"""ollama-magic: a local LLM workstation inside a Jupyter kernel, speaking Ollama's API."""

from __future__ import annotations

from ._version import __version__
from .errors import *  # noqa: F403 - every exception, re-exported as httpx does
from .errors import __all__ as _error_names
from .names import ModelName, normalize

__all__ = [
    "Engine",
    "ModelName",
    "ModelStore",
    "Modelfile",
    "__version__",
    "load_ipython_extension",
    "normalize",
    "parse_modelfile",
    "unload_ipython_extension",
    *_error_names,
]


def load_ipython_extension(shell) -> None:  # noqa: ANN001 - an IPython InteractiveShell
    """``%load_ext ollama_magic``: registers %%chat, %embed and %ollama (nothing happens at import)."""
    from .notebook.extension import load

    load(shell)


def unload_ipython_extension(shell) -> None:  # noqa: ANN001
    from .notebook.extension import unload

    unload(shell)


def __getattr__(name: str):  # noqa: ANN202
    """Lazy: the store imports the ``ollama`` client, which reads ``$OLLAMA_HOST`` at import and raises
    on a malformed one, so the CLI must be able to import this package and check that variable first;
    and importing llama.cpp is not needed to list models."""
    if name == "Engine":
        from .engine import Engine

        return Engine
    if name in ("Modelfile", "ModelStore", "parse_modelfile"):
        from . import store

        return getattr(store, name)
    raise AttributeError(name)
