"""Content-addressed blobs: ``blobs/sha256-<hex>``, each verified against its digest before it appears.

Every import hashes while it writes to a temp file in ``blobs/`` and renames only when the digest is
right, so a wrong or interrupted upload never leaves a file under a digest it does not have.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Optional

from ..errors import BlobNotFound, DigestMismatch, InvalidDigest
from ..files import StagedFile, atomic_writer, fsync_dir

log = logging.getLogger("ollama_magic")

_DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
CHUNK = 1 << 20

Progress = Callable[[int, Optional[int]], None]  # (bytes just written, total bytes if known)


def parse_digest(digest: str) -> str:
    """``sha256:<hex>`` (or ``sha256-<hex>``) -> canonical ``sha256:<hex>`` with lowercase hex."""
    match = _DIGEST_RE.fullmatch(digest.strip()) if isinstance(digest, str) else None
    if not match:
        raise InvalidDigest(f"invalid digest format: {digest!r} (expected sha256:<64 hex digits>)")
    return "sha256:" + match.group(1).lower()


@functools.lru_cache(maxsize=256)
def blob_text(blob: Path) -> str:
    """A text blob (template, system, params, messages, license), read once per process: a blob's
    name is its sha256, so what a blob path holds never changes."""
    return blob.read_text("utf-8")


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, digest: str) -> Path:
        return self.directory / parse_digest(digest).replace(":", "-")

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def require(self, digest: str) -> Path:
        path = self.path(digest)
        if not path.is_file():
            raise BlobNotFound(parse_digest(digest))
        return path

    def size(self, digest: str) -> int:
        return self.require(digest).stat().st_size

    def digest_of_path(self, path: Path) -> str | None:
        """The digest if ``path`` names a blob file (in any store's ``blobs/`` dir), else None."""
        if path.parent.name != "blobs":
            return None
        match = _DIGEST_RE.fullmatch(path.name)
        return "sha256:" + match.group(1).lower() if match else None

    def all_digests(self) -> set[str]:
        if not self.directory.is_dir():
            return set()
        found = set()
        for entry in self.directory.iterdir():
            match = _DIGEST_RE.fullmatch(entry.name)
            if match and entry.is_file():
                found.add("sha256:" + match.group(1).lower())
        return found

    def write_bytes(self, data: bytes) -> str:
        """Store small data (template, params, config); return its digest. Existing blobs are reused."""
        digest = digest_bytes(data)
        if not self.has(digest):
            with atomic_writer(self.path(digest)) as fh:
                fh.write(data)
        return digest

    def import_chunks(
        self,
        chunks: Iterable[bytes],
        expected: str | None = None,
        progress: Progress | None = None,
        total: int | None = None,
    ) -> str:
        """Stream data into the store, hashing as it goes; never holds the whole blob in memory.

        With ``expected``, data whose sha256 differs raises DigestMismatch and nothing is kept.
        """
        with self.writer(expected) as writer:
            for chunk in chunks:
                writer.write(chunk)
                if progress:
                    progress(len(chunk), total)
            return writer.commit()

    def writer(self, expected: str | None = None) -> "BlobWriter":
        """A verified blob filled piece by piece (e.g. from an HTTP upload): ``with``, ``write``, ``commit``."""
        return BlobWriter(self, parse_digest(expected) if expected else None)

    def import_file(self, source: Path, expected: str | None = None, progress: Progress | None = None) -> str:
        """Copy a local file in (verified); a blob that already exists is not copied again."""
        if expected and self.has(expected):
            return parse_digest(expected)
        with open(source, "rb") as fh:
            return self.import_chunks(_read_chunks(fh), expected, progress, os.fstat(fh.fileno()).st_size)

    def adopt(self, staged: Path, digest: str | None = None) -> str:
        """Move a finished file that was written inside ``blobs/`` (a temp name) to its digest name
        (``digest``, when the caller has just hashed it)."""
        digest = parse_digest(digest) if digest else hash_file(staged)
        os.chmod(staged, 0o644)
        os.replace(staged, self.path(digest))
        fsync_dir(self.directory)
        return digest

    def remove(self, digest: str) -> None:
        """Delete a blob if it is there. On Windows a file a runner still has open or mapped cannot be
        deleted (``PermissionError``): it then stays, referenced by no manifest, and the next
        ``ModelStore.prune`` (at start-up) removes it."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            pass
        except PermissionError:
            log.info("blob %s is in use; it is removed at the next prune", digest)


class BlobWriter:
    """Hashes while it writes to a temp file; ``commit`` names the blob only if the digest is right.

    Leaving the ``with`` block without a successful commit deletes everything written.
    """

    def __init__(self, blobs: BlobStore, expected: str | None) -> None:
        self.blobs = blobs
        self.expected = expected
        self._hasher = hashlib.sha256()
        self._staged = StagedFile(blobs.directory)

    def write(self, chunk: bytes) -> None:
        self._hasher.update(chunk)
        self._staged.file.write(chunk)

    def commit(self) -> str:
        got = "sha256:" + self._hasher.hexdigest()
        if self.expected and got != self.expected:
            raise DigestMismatch(f'digest mismatch, expected "{self.expected}", got "{got}"')
        self._staged.commit(self.blobs.path(got))
        return got

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self._staged.__exit__(*exc)


def _read_chunks(fh: BinaryIO) -> Iterable[bytes]:
    while True:
        block = fh.read(CHUNK)
        if not block:
            return
        yield block


def hash_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in _read_chunks(fh):
            hasher.update(block)
    return "sha256:" + hasher.hexdigest()
