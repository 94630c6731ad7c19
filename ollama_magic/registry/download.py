"""One blob from a registry into the store: parallel parts, resumable, verified, never buffered whole.

As in Ollama (``server/download.go``) a blob is split into up to 16 parts of 100 MB to 1 GB, each
fetched with a ``Range`` request and written at its offset into one sparse file; how far each part got
is kept in a small state file, so a killed pull continues where it stopped. Unlike Ollama, the data
file is ``blobs/.partial-<hex>`` (never a ``sha256-`` name, so nothing that lists blobs can mistake
it for a finished one), and the sha256 is computed while the parts arrive: a hashing thread follows
the contiguous prefix that is already on disk, so verifying costs no second pass over the file.
Only a file whose digest matches is renamed to ``sha256-<hex>``; a mismatch deletes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import BinaryIO

import urllib3
from filelock import FileLock

from ..errors import DigestMismatch, RegistryError
from ..files import fsync_dir
from ..store.blobs import BlobStore, parse_digest
from ..types import ProgressResponse
from .client import RegistryClient

PARTIAL_PREFIX = ".partial-"
NUM_PARTS = 16
MIN_PART = 100 * 1000 * 1000  # Ollama's format.MegaByte is 10^6
MAX_PART = 1000 * 1000 * 1000
STATE_EVERY = 4 << 20  # save a part's progress after this many new bytes
RETRIES = 5
HASH_BLOCK = 4 << 20
READ_SIZE = 1 << 20  # one readinto per MB: few Python steps per byte, a small fixed buffer


@dataclass
class Part:
    offset: int
    size: int
    completed: int = 0

    @property
    def done(self) -> bool:
        return self.completed >= self.size


def plan_parts(total: int) -> list[Part]:
    """Ollama's split: total/16 clamped to [100 MB, 1 GB]."""
    size = min(max(total // NUM_PARTS, MIN_PART), MAX_PART)
    return [Part(offset, min(size, total - offset)) for offset in range(0, total, size)] or [Part(0, 0)]


def status_of(digest: str) -> str:
    """Ollama's progress status for a blob: ``pulling`` + 12 hex digits."""
    return f"pulling {digest[7:19]}"


class BlobDownload:
    """Fetch ``digest`` (``size`` bytes, from the manifest) into ``blobs``; ``run`` then ``commit``.

    ``run`` holds a file lock on ``.partial-<hex>.lock`` beside the partial file, so two processes
    pulling the same blob (a kernel and a server on one store) do not write it twice: the second waits,
    then finds the blob. Each part's thread and the hashing thread open the partial file for
    themselves and seek (Windows has no ``os.pwrite``/``os.pread``).
    """

    def __init__(self, client: RegistryClient, blobs: BlobStore, digest: str, size: int) -> None:
        self.client = client
        self.blobs = blobs
        self.digest = parse_digest(digest)
        self.total = size
        hex_digest = self.digest[7:]
        self.data_path = blobs.directory / f"{PARTIAL_PREFIX}{hex_digest}"
        self.state_path = blobs.directory / f"{PARTIAL_PREFIX}{hex_digest}.json"
        self.lock_path = blobs.directory / f"{PARTIAL_PREFIX}{hex_digest}.lock"
        self.parts: list[Part] = []
        self.cache_hit = False
        self.got: str | None = None
        self._cv = threading.Condition()
        self._error: BaseException | None = None

    # ---- progress (read from any thread) --------------------------------------------------------

    @property
    def completed(self) -> int | None:
        """Bytes on disk; None until the parts are known (Ollama's first message has no ``completed``)."""
        if self.cache_hit:
            return self.total
        if not self.parts:
            return None
        return sum(p.completed for p in self.parts)

    def progress(self) -> ProgressResponse:
        return ProgressResponse(status=status_of(self.digest), digest=self.digest, total=self.total,
                                completed=self.completed)

    # ---- the work ---------------------------------------------------------------------------------

    def run(self, cancel: threading.Event) -> None:
        """Download and hash. Leaves the partial file and its state when interrupted (resumable)."""
        self.blobs.directory.mkdir(parents=True, exist_ok=True)
        if self.blobs.has(self.digest):
            self.cache_hit = True
            return
        with FileLock(self.lock_path):
            if self.blobs.has(self.digest):  # another process finished it while we waited
                self.cache_hit = True
                return
            with open(self.data_path, "ab"):  # create it, keeping what an interrupted pull wrote
                pass
            self.parts = self._load_state() or plan_parts(self.total)
            self._save_state()
            os.truncate(self.data_path, self.total)
            hasher = threading.Thread(target=self._hash, args=(cancel,), name="ollama-magic: hash", daemon=True)
            hasher.start()
            todo = [p for p in self.parts if not p.done]
            try:
                if todo:
                    with ThreadPoolExecutor(len(todo), thread_name_prefix="ollama-magic: part") as pool:
                        for future in [pool.submit(self._fetch_part, part, cancel) for part in todo]:
                            future.result()
            except BaseException as exc:
                self._fail(exc)
                cancel.set()  # the other parts stop too; their progress is saved
                raise
            finally:
                self._save_state()
                hasher.join()
            if self._error is not None:
                raise self._error

    def commit(self) -> None:
        """Name the blob if its digest matches; otherwise delete what was downloaded and raise."""
        if self.cache_hit:
            return
        if not all(p.done for p in self.parts):
            raise RegistryError(f"the download of {self.digest[7:19]} was interrupted; pull again to resume")
        if self.got != self.digest:
            self.discard()
            raise DigestMismatch(f"digest mismatch, file must be downloaded again: want {self.digest}, "
                                 f"got {self.got}")
        os.chmod(self.data_path, 0o644)
        os.replace(self.data_path, self.blobs.path(self.digest))
        for path in (self.state_path, self.lock_path):  # a waiter on the lock then finds the blob
            with contextlib.suppress(OSError):  # FileNotFoundError; on Windows, a lock another pull holds
                path.unlink()
        fsync_dir(self.blobs.directory)

    def discard(self) -> None:
        for path in (self.data_path, self.state_path, self.lock_path):
            with contextlib.suppress(FileNotFoundError, PermissionError):  # Windows: a lock another pull holds
                path.unlink()

    # ---- helpers ----------------------------------------------------------------------------------

    def _load_state(self) -> list[Part] | None:
        try:
            state = json.loads(self.state_path.read_text())
            if state.get("digest") != self.digest or state.get("total") != self.total:
                return None
            parts = [Part(int(p["offset"]), int(p["size"]), int(p["completed"])) for p in state["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if self.data_path.stat().st_size != self.total:
            return None  # the data file is not the one the state describes: start over
        return parts

    def _save_state(self) -> None:
        with self._cv:
            state = {"digest": self.digest, "total": self.total, "parts": [asdict(p) for p in self.parts]}
        tmp = self.state_path.with_name(self.state_path.name + f".{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def _fetch_part(self, part: Part, cancel: threading.Event) -> None:
        for attempt in range(RETRIES + 1):
            if cancel.is_set() or part.done:
                return
            try:
                self._fetch_once(part, cancel)
                return
            except RegistryError:
                raise
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt == RETRIES:
                    raise RegistryError(f"downloading {self.digest[7:19]} failed: {exc}") from None
                cancel.wait(min(2**attempt * 0.5, 8))

    def _fetch_once(self, part: Part, cancel: threading.Event) -> None:
        start, end = part.offset + part.completed, part.offset + part.size - 1
        headers = {"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"}
        response = self.client.get_blob(self.client.ref.url("blobs", self.digest), headers=headers,
                                        what=f"pull {self.digest[7:19]}")
        buffer = bytearray(READ_SIZE)
        view = memoryview(buffer)
        out = open(self.data_path, "r+b", buffering=0)  # this part's own handle: its own position
        try:
            if response.status != 206 and start != 0:
                raise RegistryError(f"{self.client.ref.name.host} ignored a Range request "
                                    f"({response.status}); cannot download in parts")
            position, unsaved, untold = start, 0, 0
            while not (cancel.is_set() or part.done):
                n = response.readinto(buffer)
                if not n:
                    break
                n = min(n, part.offset + part.size - position)
                out.seek(position)
                _write_all(out, view[:n])
                position += n
                unsaved += n
                untold += n
                with self._cv:
                    part.completed += n
                    if untold >= HASH_BLOCK or part.done:  # wake the hasher per block, not per read
                        self._cv.notify_all()
                        untold = 0
                if unsaved >= STATE_EVERY:
                    self._save_state()
                    unsaved = 0
        finally:
            out.close()
            view.release()
            response.close()  # one request per part: nothing to keep the connection for
        if not part.done and not cancel.is_set():
            raise ConnectionError(f"the connection closed at byte {position} of {part.offset + part.size}")

    def _contiguous(self) -> int:
        """How many bytes from the start are on disk (the hashing thread may read that far)."""
        end = 0
        for part in self.parts:  # in offset order
            end = part.offset + part.completed
            if not part.done:
                break
        return end

    def _hash(self, cancel: threading.Event) -> None:
        """Hash the file from its start as its contiguous prefix grows (on its own handle); when
        cancelled, ``got`` stays unset (the hasher saw only part of the file)."""
        hasher = hashlib.sha256()
        hashed = 0
        try:
            with open(self.data_path, "rb", buffering=0) as data:
                while hashed < self.total:
                    with self._cv:
                        while (limit := self._contiguous()) - hashed < min(HASH_BLOCK, self.total - hashed):
                            if cancel.is_set() or self._error is not None:
                                return
                            self._cv.wait(0.2)
                    data.seek(hashed)
                    while hashed < limit:
                        block = data.read(min(HASH_BLOCK, limit - hashed))
                        if not block:
                            raise RegistryError(f"{self.data_path} is shorter than its parts say")
                        hasher.update(block)
                        hashed += len(block)
            self.got = "sha256:" + hasher.hexdigest()
        except BaseException as exc:  # noqa: BLE001 - handed to run(), which raises it
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        with self._cv:  # also wakes the hasher, which then stops
            if self._error is None:
                self._error = exc
            self._cv.notify_all()


def _write_all(out: BinaryIO, data: memoryview) -> None:
    """An unbuffered write may take fewer bytes than it was given: write until all are on disk."""
    while data:
        data = data[out.write(data) :]
