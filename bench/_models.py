"""What every benchmark starts from: an Engine over a throwaway store holding the embedded models."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from typing import Iterator

from ollama_magic import Engine
from ollama_magic.defaults import register
from ollama_magic.store import ModelStore


@contextmanager
def engine_with(*models: str) -> Iterator[Engine]:
    """Registered fresh from their packages, so a run never depends on (or touches) the user's store."""
    with tempfile.TemporaryDirectory() as root:
        store = ModelStore(root)
        for name in models:
            register(store, name)
        with Engine(store) as engine:
            yield engine
