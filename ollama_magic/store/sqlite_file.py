"""One SQLite file shared by threads and processes: how the column cache and the stored responses open
theirs and write to it.

One connection behind a lock serves every thread of a process (``check_same_thread=False``; a
connection is not safe to use from two threads at once). Between processes (two kernels, two servers
on one data directory) WAL lets readers and one writer work at once, and the busy timeout makes a
writer wait for the file's lock instead of failing. ``synchronous=NORMAL`` under WAL loses nothing
when a process dies, only possibly on power loss. Every write is one ``BEGIN IMMEDIATE`` transaction:
it takes the write lock at its start, so two writers queue rather than deadlock on an upgrade, and
what a killed process had committed stays.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterator


class SQLiteFile:
    """``path``'s connection, with ``schema`` (``CREATE ... IF NOT EXISTS`` statements) applied in one
    transaction, so two processes creating the file at once do not collide. Raises sqlite3.Error or
    OSError when the file cannot be opened (its connection closed then)."""

    def __init__(self, path: Path, schema: str, busy_timeout: float = 30.0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            _patiently(lambda: self.db.execute("PRAGMA journal_mode = WAL"), busy_timeout)
            self.db.execute("PRAGMA synchronous = NORMAL")
            with self.lock:
                try:
                    self.db.executescript("BEGIN IMMEDIATE;" + schema + "COMMIT;")
                except BaseException:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise
        except BaseException:
            self.db.close()
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for statements outside a write transaction (each its own, as autocommit)."""
        with self.lock:
            yield self.db

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error) under the connection's lock."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _patiently(statement: Callable[[], object], timeout: float) -> None:
    """Run ``statement`` until the file's lock lets it, up to ``timeout`` seconds. Switching a new file
    to WAL answers "database is locked" at once, without SQLite's busy handler, while another process
    is creating the same file: two kernels starting a column together lost one kernel's cache (measured:
    9 of 180 opens of a fresh file by 3 processes at once)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


__all__ = ["SQLiteFile"]
