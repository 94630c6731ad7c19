"""create / copy / delete on the real Gemma 3 270M GGUF, with every FROM form."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_magic.defaults import register
from ollama_magic.engine.capabilities import capabilities
from ollama_magic.store import ModelStore
from ollama_magic.types import CreateRequest

pytestmark = pytest.mark.integration


@pytest.fixture
def store(fresh_store: ModelStore) -> ModelStore:
    """A fresh store holding gemma3:270m (its weights hard-linked, not copied)."""
    register(fresh_store, "gemma3:270m")
    return fresh_store


def details(store: ModelStore, name: str):
    return {m.name: m for m in store.list().models}[name].details


def test_from_model_name(store: ModelStore) -> None:
    statuses = [s.status for s in store.create("pirate", "FROM gemma3:270m\nSYSTEM Talk like a pirate.")]
    assert statuses[-1] == "success"
    assert any(s.startswith("using existing layer sha256:") for s in statuses)
    assert any(s.startswith("creating new layer sha256:") for s in statuses)
    show = store.show("pirate")
    assert show.system == "Talk like a pirate."
    assert show.template == store.show("gemma3:270m").template  # inherited
    assert details(store, "pirate:latest").parent_model == "gemma3:270m"
    assert details(store, "pirate:latest").family == "gemma3"


def test_from_blob_path_as_in_the_seed_document(store: ModelStore, gemma_blob: Path) -> None:
    blob_path = store.blobs.directory / gemma_blob.name
    list(store.create("test1", CreateRequest(name="test1", modelfile=f"FROM {blob_path}"), trusted=False))
    assert details(store, "test1:latest").quantization_level == "Q4_K_M"
    assert capabilities(store.find("test1")) == ["completion"]


def test_from_digest(store: ModelStore, gemma_blob: Path) -> None:
    digest = "sha256:" + gemma_blob.name.removeprefix("sha256-")
    list(store.create("bydigest", f"FROM {digest}\nPARAMETER num_ctx 2048", trusted=False))
    assert store.show("bydigest").parameters == "num_ctx                        2048"


def test_from_gguf_file_path_imports_it(tmp_path: Path, gemma_blob: Path) -> None:
    fresh = ModelStore(tmp_path / "fresh")
    link = tmp_path / "gemma-3-270m.gguf"
    link.symlink_to(gemma_blob)
    seen: list[int] = []
    list(fresh.create("imported", f"FROM {link}", on_bytes=lambda n, total: seen.append(total)))
    assert fresh.find("imported").model_path.read_bytes()[:4] == b"GGUF"
    assert fresh.find("imported").model_path.stat().st_size == gemma_blob.stat().st_size
    assert seen and seen[0] == gemma_blob.stat().st_size  # progress knew the total


def test_copy_and_delete_clean_up_blobs(store: ModelStore, gemma_blob: Path) -> None:
    list(store.create("custom", "FROM gemma3:270m\nSYSTEM Only in custom."))
    system_digest = store.find("custom").manifest.layer("application/vnd.ollama.image.system").digest
    store.copy("custom", "custom-copy")
    assert store.find("custom-copy").manifest_digest == store.find("custom").manifest_digest

    store.delete("custom")
    assert store.blobs.has(system_digest)  # the copy still uses it
    store.delete("custom-copy")
    assert not store.blobs.has(system_digest)
    assert (store.blobs.directory / gemma_blob.name).exists()  # gemma3:270m still uses the weights

    store.delete("gemma3:270m")
    assert store.blobs.all_digests() == set()
    assert store.list().models == []
