"""What the store may delete on its own: never a blob some model still needs, and at start-up (as
Ollama's serve does) the leftovers of a crash. Tiny GGUFs written by the test; no real model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import write_tiny_gguf
from ollama_magic.store import ModelStore
from ollama_magic.files import TMP_PREFIX
from ollama_magic.registry.download import PARTIAL_PREFIX
from ollama_magic.store.manifests import MODEL

HOUR = 3600


def create(store: ModelStore, name: str, text: str) -> None:
    for _ in store.create(name, text):
        pass


def weights(store: ModelStore, name: str) -> str:
    return store.find(name).manifest.layer(MODEL).digest


def backdate(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def two_models(store: ModelStore, tmp_path: Path) -> ModelStore:
    create(store, "llama-like", f"FROM {write_tiny_gguf(tmp_path / 'a.gguf', arch='llama')}")
    create(store, "bert-like", f"FROM {write_tiny_gguf(tmp_path / 'b.gguf', arch='bert', embedding=True)}")
    return store


def test_copy_over_an_existing_model_deletes_none_of_its_blobs(two_models: ModelStore) -> None:
    store = two_models
    replaced = store.find("llama-like").manifest.digests
    store.copy("bert-like", "llama-like")
    assert store.find("llama-like").manifest == store.find("bert-like").manifest  # it now serves the other model
    assert replaced <= store.blobs.all_digests()  # and the weights it replaced are still there


def test_copy_to_a_name_differing_only_in_case_replaces_that_model(two_models: ModelStore) -> None:
    store = two_models
    store.copy("bert-like", "LLAMA-LIKE")
    assert sorted(m.name for m in store.list().models) == ["bert-like:latest", "llama-like:latest"]
    assert store.find("llama-like").manifest == store.find("bert-like").manifest


def test_create_over_a_name_keeps_blobs_an_unreadable_manifest_may_need(two_models: ModelStore, tmp_path: Path) -> None:
    store = two_models
    shared = weights(store, "llama-like")
    create(store, "mine", "FROM llama-like")  # shares the llama weights
    store.find("llama-like").manifest_path.write_text("{ half a manifest")  # e.g. a disk error
    create(store, "mine", "FROM bert-like")  # replaces mine: the llama weights look unused now
    assert store.blobs.has(shared)


def test_create_over_a_name_with_noprune_keeps_the_old_layers(two_models: ModelStore, monkeypatch) -> None:
    store = two_models
    create(store, "m", "FROM llama-like\nSYSTEM first")
    old = store.find("m").manifest.layer("application/vnd.ollama.image.system").digest
    monkeypatch.setenv("OLLAMA_NOPRUNE", "1")
    create(store, "m", "FROM llama-like\nSYSTEM second")
    assert store.blobs.has(old)


def test_prune_removes_crash_leftovers_and_keeps_everything_in_use(two_models: ModelStore) -> None:
    store = two_models
    in_use = store.blobs.all_digests()
    old_orphan = store.blobs.write_bytes(b"layers of a create that was killed")
    young_orphan = store.blobs.write_bytes(b"uploaded a moment ago, its create comes next")
    backdate(store.blobs.path(old_orphan), 2 * HOUR)
    dead_temp = store.blobs.directory / f"{TMP_PREFIX}999999999-abcdef"  # no such pid: its writer is gone
    dead_temp.write_bytes(b"half a blob")
    manifest_dir = store.find("llama-like").manifest_path.parent
    dead_manifest_temp = manifest_dir / f"{TMP_PREFIX}999999999-123456"
    dead_manifest_temp.write_bytes(b"{")

    assert store.prune() == [old_orphan]
    assert store.blobs.all_digests() == in_use | {young_orphan}
    assert not dead_temp.exists() and not dead_manifest_temp.exists()
    assert sorted(m.name for m in store.list().models) == ["bert-like:latest", "llama-like:latest"]


def test_prune_keeps_an_interrupted_pulls_partial_blob_and_its_progress(two_models: ModelStore) -> None:
    """A pull killed hours ago resumes from its ``.partial-<hex>`` file and ``.json`` parts, so the
    start-up prune (which removes unreferenced blobs and dead writers' temp files) must leave them."""
    store = two_models
    hex_digest = "ab" * 32
    partial = store.blobs.directory / f"{PARTIAL_PREFIX}{hex_digest}"
    progress = store.blobs.directory / f"{PARTIAL_PREFIX}{hex_digest}.json"
    partial.write_bytes(b"the first megabytes of a model")
    progress.write_text('{"parts": [{"offset": 0, "size": 30, "completed": 30}]}')
    for path in (partial, progress):
        backdate(path, 48 * HOUR)

    assert store.prune() == []
    assert partial.read_bytes() == b"the first megabytes of a model"
    assert progress.exists()


def test_prune_removes_nothing_while_a_manifest_is_unreadable(two_models: ModelStore) -> None:
    store = two_models
    orphan = store.blobs.write_bytes(b"nobody's")
    backdate(store.blobs.path(orphan), 2 * HOUR)
    store.find("bert-like").manifest_path.write_text("not json")
    before = store.blobs.all_digests()
    assert store.prune() == []
    assert store.blobs.all_digests() == before


def test_a_blob_a_runner_still_holds_is_left_for_the_next_prune(two_models: ModelStore,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows a file that is open or memory-mapped (the weights of a model still answering a
    request) cannot be deleted: ``rm`` removes the model and leaves the blob, which the next prune
    removes once nothing holds it."""
    store = two_models
    held = store.blobs.path(weights(store, "llama-like"))
    unlink = Path.unlink

    def windows_unlink(path: Path, missing_ok: bool = False) -> None:
        if path == held:
            raise PermissionError(13, "The process cannot access the file because it is being used by "
                                      "another process", str(path))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", windows_unlink)
    store.delete("llama-like")
    assert store.find("llama-like") is None and held.exists()
    assert store.prune(grace=0) == []  # still held: kept, and no error
    monkeypatch.setattr(Path, "unlink", unlink)  # the runner let go
    assert store.prune(grace=0) == [f"sha256:{held.name[7:]}"] and not held.exists()
