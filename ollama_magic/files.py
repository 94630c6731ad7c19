"""Generic file utilities the model store and the conversations share: crash-safe writes, a
cross-process lock, and our per-user data directory.

Crash-safe writes: temp file in the same directory, fsync, rename, fsync the directory (where the OS
lets a directory be opened: not on Windows). A reader (or a process that starts after a crash) sees
either the old file or the new one, never a half-written one. Temp names carry our pid so a later run can tell an abandoned temp file from one a
live writer is still filling.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

import platformdirs
import psutil
from filelock import FileLock

TMP_PREFIX = ".tmp-om-"


def data_dir() -> Path:
    """Our per-user data directory, where each OS keeps one (platformdirs): on Linux
    ``$XDG_DATA_HOME/ollama-magic`` (default ``~/.local/share/ollama-magic``, where it always was), on
    macOS ``~/Library/Application Support/ollama-magic``, on Windows ``%LOCALAPPDATA%\\ollama-magic``."""
    return Path(platformdirs.user_data_dir("ollama-magic", appauthor=False))


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable. Windows cannot open a directory (``PermissionError``) and
    commits the rename's metadata itself, so there, as ``atomicwrites`` did, there is nothing to do."""
    if os.name == "nt":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except PermissionError:  # a directory that cannot be opened cannot be fsynced: the rename stands
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_in(directory: Path) -> Path:
    return directory / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"


class StagedFile:
    """A temp file in ``directory`` that becomes a real file only through ``commit``.

    Leaving the ``with`` block without a commit (an error, a digest mismatch) deletes it.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = temp_path_in(directory)
        self.file: BinaryIO = open(self.path, "xb")

    def commit(self, target: Path) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.path, 0o644)
        os.replace(self.path, target)
        fsync_dir(target.parent)

    def __enter__(self) -> "StagedFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@contextlib.contextmanager
def atomic_writer(target: Path) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it replaces ``target`` atomically, on error it vanishes."""
    with StagedFile(target.parent) as staged:
        yield staged.file
        staged.commit(target)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_writer(target) as fh:
        fh.write(data)


def remove_stale_temp_files(directory: Path) -> int:
    """Delete temp files left by writers that no longer run (a crash); return how many."""
    removed = 0
    if not directory.is_dir():
        return 0
    for entry in directory.iterdir():
        if not entry.name.startswith(TMP_PREFIX):
            continue
        try:
            pid = int(entry.name[len(TMP_PREFIX) :].split("-", 1)[0])
        except ValueError:
            pid = -1
        if pid > 0 and _pid_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs. Not ``os.kill(pid, 0)``: on Windows that terminates it."""
    return psutil.pid_exists(pid)


@contextlib.contextmanager
def exclusive_lock(directory: Path, lock_name: str, thread_lock: threading.Lock | threading.RLock) -> Iterator[None]:
    """Hold ``thread_lock`` and a file lock on ``directory/lock_name``: one writer at a time across
    threads and processes (a kernel, the CLI and a server sharing one directory). ``filelock`` takes an
    ``flock`` on POSIX (the same lock older versions of this package took) and ``msvcrt.locking`` on
    Windows."""
    with thread_lock:
        directory.mkdir(parents=True, exist_ok=True)
        with FileLock(directory / lock_name):
            yield
