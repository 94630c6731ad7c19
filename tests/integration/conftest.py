"""Fixtures on the real embedded models (Gemma 3 270M GGUF, all-MiniLM-L6-v2 converted to GGUF)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

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


@pytest.fixture(scope="session")
def clone_registered(registered: ModelStore) -> Callable[[Path], ModelStore]:
    """Make a writable store holding both default models at a new root, in milliseconds: manifests are
    copied and blobs hard-linked, so deleting or creating models there leaves ``registered`` alone."""

    def clone(root: Path) -> ModelStore:
        shutil.copytree(registered.root / "manifests", root / "manifests")
        (root / "blobs").mkdir(parents=True)
        for blob in registered.blobs.directory.iterdir():
            os.link(blob, root / "blobs" / blob.name)
        return ModelStore(root)

    return clone
