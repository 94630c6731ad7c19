"""One blob from a registry into the store, with a fake registry that serves ``Range`` requests from
bytes in memory: the download writes and hashes the file without POSIX-only calls (Windows has no
``os.pwrite``/``os.pread``/``fcntl``), resumes, and leaves no helper files once the blob is named."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from ollama_magic.errors import DigestMismatch
from ollama_magic.registry.client import RegistryRef
from ollama_magic.registry.download import PARTIAL_PREFIX, BlobDownload
from ollama_magic.store.blobs import BlobStore

DATA = os.urandom(3 << 20) + b"tail"  # a few MB: several reads and hash blocks, one part


class _Response(io.BytesIO):
    def __init__(self, data: bytes, status: int) -> None:
        super().__init__(data)
        self.status = status


class FakeRegistry:
    """What BlobDownload needs of a RegistryClient: ``ref`` and ``get_blob`` answering a Range."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ref = RegistryRef.parse("localhost:5000/ns/model", insecure=True)
        self.ranges: list[str] = []

    def get_blob(self, url: str, *, headers: dict[str, str], what: str) -> _Response:
        first, last = (int(x) for x in headers["Range"].removeprefix("bytes=").split("-"))
        self.ranges.append(headers["Range"])
        return _Response(self.data[first : last + 1], 206)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def without_posix_file_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on Windows: no positional reads and writes on a file descriptor."""
    monkeypatch.delattr(os, "pwrite")
    monkeypatch.delattr(os, "pread")


def test_a_blob_downloads_verifies_and_is_named_without_pwrite_or_pread(tmp_path: Path, without_posix_file_calls) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    download = BlobDownload(FakeRegistry(DATA), blobs, digest(DATA), len(DATA))
    download.run(threading.Event())
    download.commit()
    assert blobs.path(digest(DATA)).read_bytes() == DATA
    assert [p.name for p in blobs.directory.iterdir()] == [blobs.path(digest(DATA)).name]  # no partial, state or lock


def test_an_interrupted_download_resumes_from_where_it_stopped(tmp_path: Path, without_posix_file_calls) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    half = len(DATA) // 2
    blobs.directory.mkdir(parents=True)
    (blobs.directory / f"{PARTIAL_PREFIX}{digest(DATA)[7:]}").write_bytes(DATA[:half] + bytes(len(DATA) - half))
    (blobs.directory / f"{PARTIAL_PREFIX}{digest(DATA)[7:]}.json").write_text(
        f'{{"digest": "{digest(DATA)}", "total": {len(DATA)}, '
        f'"parts": [{{"offset": 0, "size": {len(DATA)}, "completed": {half}}}]}}')
    registry = FakeRegistry(DATA)
    download = BlobDownload(registry, blobs, digest(DATA), len(DATA))
    download.run(threading.Event())
    download.commit()
    assert registry.ranges == [f"bytes={half}-{len(DATA) - 1}"]  # only the missing half was asked for
    assert blobs.path(digest(DATA)).read_bytes() == DATA


def test_a_wrong_digest_keeps_nothing(tmp_path: Path, without_posix_file_calls) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    download = BlobDownload(FakeRegistry(DATA), blobs, digest(b"something else"), len(DATA))
    download.run(threading.Event())
    with pytest.raises(DigestMismatch):
        download.commit()
    assert list(blobs.directory.iterdir()) == []
