"""Fixtures on the real embedded models (Gemma 3 270M GGUF, all-MiniLM-L6-v2 converted to GGUF)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_magic.defaults import register_all
from ollama_magic.store import ModelStore


@pytest.fixture(scope="session")
def registered_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with both default models registered once per session (read-only for tests)."""
    root = tmp_path_factory.mktemp("registered") / "models"
    register_all(ModelStore(root))
    return root


@pytest.fixture(scope="session")
def registered(registered_root: Path) -> ModelStore:
    return ModelStore(registered_root)


@pytest.fixture(scope="session")
def gemma_blob(registered: ModelStore) -> Path:
    return registered.find("gemma3:270m").model_path


@pytest.fixture
def fresh_store(tmp_path: Path, gemma_blob: Path) -> ModelStore:
    """An empty store whose blobs dir already holds Gemma's weights (hard-linked, not copied)."""
    store = ModelStore(tmp_path / "models")
    store.blobs.directory.mkdir(parents=True)
    (store.blobs.directory / gemma_blob.name).hardlink_to(gemma_blob)
    return store
