"""Shared fixtures. Every test runs against a store (and conversations) in temp dirs, never the user's real ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ollama_magic.store import ModelStore

_ROOT = Path(__file__).resolve().parents[1]
#: where the tests that load a real model live: everything here is marked ``integration``
INTEGRATION_DIRS = (_ROOT / "tests" / "integration", _ROOT / "tests" / "browser", _ROOT / "notebooks")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under INTEGRATION_DIRS (nbval's notebook cells included) ``integration``, so
    ``-m "not integration"`` (``make test-fast``) runs the unit tests alone."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if any(path.is_relative_to(directory) for directory in INTEGRATION_DIRS):
            item.add_marker(pytest.mark.integration)


_CACHE_DIRS: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """Module- and session-scoped fixtures run before the autouse one below: their ``--over`` and
    ``%embed`` calls must not fill the user's column cache either."""
    import os
    import tempfile

    _CACHE_DIRS.append(tempfile.mkdtemp(prefix="ollama-magic-tests-"))
    os.environ["OLLAMA_MAGIC_CACHE"] = os.path.join(_CACHE_DIRS[-1], "cache.sqlite")
    os.environ["OLLAMA_MAGIC_RESPONSES"] = os.path.join(_CACHE_DIRS[-1], "responses.sqlite")
    os.environ["OLLAMA_MAGIC_INDEXES"] = os.path.join(_CACHE_DIRS[-1], "indexes")


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    for directory in _CACHE_DIRS:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_store_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path_factory.mktemp("default-root")))
    monkeypatch.setenv("OLLAMA_MAGIC_CONVERSATIONS", str(tmp_path_factory.mktemp("conversations")))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    monkeypatch.setenv("OLLAMA_MAGIC_CACHE", str(tmp_path_factory.mktemp("column-cache") / "cache.sqlite"))
    monkeypatch.setenv("OLLAMA_MAGIC_RESPONSES", str(tmp_path_factory.mktemp("responses") / "responses.sqlite"))
    monkeypatch.setenv("OLLAMA_MAGIC_INDEXES", str(tmp_path_factory.mktemp("indexes")))


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def write_tiny_gguf(path: Path, *, arch: str = "llama", embedding: bool = False, n_vocab: int = 12) -> Path:
    """A small, valid GGUF (random weights, not loadable for inference) for store tests without a model."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny test model")
    writer.add_context_length(256)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if embedding:
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_token_list([f"tok{i}" for i in range(n_vocab)])
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((n_vocab, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")
