"""Which notebook this kernel runs: the key that names its conversation file.

Every notebook gets a :class:`NotebookIdentity`: its path when the front end tells us, else the kernel
session, else this process. Two notebooks never share one; the same notebook keeps its own across
kernel restarts whenever the front end reports the path.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

from .. import envconfig

_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class NotebookIdentity:
    """Which notebook a conversation belongs to.

    ``key`` names its file (stable across kernel restarts when the notebook path is known, and safe on
    any filesystem); ``label`` is what a person sees; ``source`` says how sure we are: ``"path"`` (the
    front end told us the notebook), ``"session"`` (the kernel's connection file: lasts as long as the
    kernel session) or ``"fallback"`` (this process only).
    """

    key: str
    label: str
    source: Literal["path", "session", "fallback"]


def notebook_identity(shell: InteractiveShell | None = None) -> NotebookIdentity:
    """The identity of the notebook ``shell`` runs (``shell`` may be None outside IPython).

    Looked up in order: ``__session__`` in the user namespace (ipykernel sets it from
    ``JPY_SESSION_NAME``, ipykernel PR #1095), ``__vsc_ipynb_file__`` (VS Code), the
    ``JPY_SESSION_NAME`` environment variable (Jupyter Server), the kernel's connection file
    (``ipykernel.get_connection_file()``), and last this process id.
    """
    path = notebook_path(shell)
    if path is not None:
        return NotebookIdentity(_identity_key("path", path, PurePath(path).stem), path, "path")
    session = kernel_session_id()
    if session is not None:
        return NotebookIdentity(_identity_key("session", session, "session"), f"kernel session {session}", "session")
    pid = f"pid-{os.getpid()}"
    return NotebookIdentity(_identity_key("fallback", pid, pid), f"python process {os.getpid()}", "fallback")


def notebook_path(shell: InteractiveShell | None = None) -> str | None:
    """The notebook's path as the front end reports it, or None when no front end does."""
    user_ns = getattr(shell, "user_ns", None) or {}
    candidates = (user_ns.get("__session__"), user_ns.get("__vsc_ipynb_file__"), envconfig.jpy_session_name())
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def kernel_session_id() -> str | None:
    """The running kernel's id from its connection file name (``kernel-<id>.json``), if in a kernel.

    ipykernel is only asked when it is already imported: in plain Python there is no kernel, and
    importing ipykernel just to learn that would cost the import time users complain about.
    """
    if "ipykernel" not in sys.modules:
        return None
    try:
        from ipykernel import get_connection_file

        connection_file = get_connection_file()
    except Exception:  # not in a running kernel (RuntimeError), an old or odd ipykernel
        return None
    stem = PurePath(str(connection_file)).stem
    session = stem.removeprefix("kernel-")
    return session or None


def _identity_key(source: str, value: str, readable: str) -> str:
    """``<readable slug>-<16 hex digits of sha256(source:value)>``: unique, stable, filesystem-safe."""
    digest = hashlib.sha256(f"{source}:{value}".encode("utf-8")).hexdigest()[:16]
    slug = _SLUG_UNSAFE.sub("-", readable).strip(".-")[:40] or "notebook"
    return f"{slug}-{digest}"


__all__ = ["NotebookIdentity", "kernel_session_id", "notebook_identity", "notebook_path"]
