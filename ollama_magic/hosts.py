"""Where Ollama listens by default, defined once for the server, the CLI and the notebook."""

from __future__ import annotations

import os

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11434
DEFAULT_ADDRESS = f"{DEFAULT_HOST}:{DEFAULT_PORT}"


def ollama_host() -> str:
    """The server a client talks to: ``$OLLAMA_HOST``, else ``127.0.0.1:11434`` (as the ollama CLI)."""
    return os.environ.get("OLLAMA_HOST") or DEFAULT_ADDRESS


__all__ = ["DEFAULT_ADDRESS", "DEFAULT_HOST", "DEFAULT_PORT", "ollama_host"]
