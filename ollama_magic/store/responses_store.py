"""Stored ``/v1/responses``: what ``store`` keeps and ``previous_response_id`` continues from.

One row per response: the response object as the API returned it (model, instructions, output items,
usage, status, created_at) and the full input that produced it, as input items: the chain's earlier
inputs and outputs first, then the request's own. Each row is therefore self-contained: continuing
from it needs that one row, so deleting or evicting an earlier response of the chain never breaks a
later one (the cost is that a long chain repeats its history in every row; the count and age bounds
keep the file bounded).

Why SQLite, as the column cache: the one embedded store every Python has, each write is its own
atomic transaction (a killed server loses nothing it had answered: WAL with ``synchronous=NORMAL``),
and WAL plus a busy timeout lets several server threads, or two servers on one data directory, use one
file. Why its own file rather than the column cache's: the cache is disposable memo data bounded in
bytes, emptied (and VACUUMed) by ``cache clear``; stored responses are conversations a client refers
to by id, bounded in count and age, and a server writing them must not contend with notebook kernels
writing cache rows.

Bounds (``OLLAMA_MAGIC_RESPONSES_MAX``, ``OLLAMA_MAGIC_RESPONSES_MAX_AGE``) are applied on every
write, oldest first; a read never returns a response past the age bound, even before a write has
evicted it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import envconfig
from ..files import data_dir
from .sqlite_file import SQLiteFile

log = logging.getLogger("ollama_magic")

DEFAULT_FILE = "responses.sqlite"
_UNSET: Any = object()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,     -- when it was stored (time.time()), for the age bound and the order
    response TEXT NOT NULL,    -- the response object, JSON
    input TEXT NOT NULL        -- the full input items (the chain's, then the request's), JSON
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created);
"""


def default_path() -> Path:
    """``$OLLAMA_MAGIC_RESPONSES``, else ``<data dir>/responses.sqlite`` (beside the column cache)."""
    env = envconfig.responses()
    return Path(env).expanduser() if env else data_dir() / DEFAULT_FILE


@dataclass(frozen=True)
class StoredResponse:
    """One stored response: the object ``GET /v1/responses/{id}`` returns and its full input items."""

    response: dict[str, Any]
    input_items: list[dict[str, Any]]


class ResponseStore:
    """The stored responses, bounded in count (``max_count``) and age (``max_age`` seconds, None:
    forever); both default to their environment variables. ``clock`` is the time source (a test's
    controllable clock). Usable from several threads (one connection behind a lock)."""

    def __init__(self, path: Path | str | None = None, max_count: int | None = None,
                 max_age: float | None = _UNSET, clock: Callable[[], float] = time.time,
                 busy_timeout: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.max_count = envconfig.responses_max() if max_count is None else int(max_count)
        self.max_age = envconfig.responses_max_age() if max_age is _UNSET else max_age
        self.clock = clock
        self._file = SQLiteFile(self.path, _SCHEMA, busy_timeout)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ResponseStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cutoff(self) -> float:
        return float("-inf") if self.max_age is None else self.clock() - self.max_age

    def put(self, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        """Store (or replace) ``response`` under its ``id``, then evict past the bounds, in one transaction."""
        row = (response["id"], self.clock(), json.dumps(response, ensure_ascii=False),
               json.dumps(input_items, ensure_ascii=False))
        with self._file.write() as db:
            db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)", row)
            db.execute("DELETE FROM responses WHERE created < ?", (self._cutoff(),))
            db.execute("DELETE FROM responses WHERE rowid IN (SELECT rowid FROM responses "
                       "ORDER BY created DESC, rowid DESC LIMIT -1 OFFSET ?)", (self.max_count,))

    def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None: never stored, deleted, evicted, or older than the age bound."""
        with self._file.read() as db:
            row = db.execute("SELECT response, input FROM responses WHERE id = ? AND created >= ?",
                             (response_id, self._cutoff())).fetchone()
        return None if row is None else StoredResponse(json.loads(row[0]), json.loads(row[1]))

    def delete(self, response_id: str) -> bool:
        """Forget one response; False when there was none to forget (or it was already past its age)."""
        with self._file.read() as db:
            return db.execute("DELETE FROM responses WHERE id = ? AND created >= ?",
                              (response_id, self._cutoff())).rowcount > 0

    def __len__(self) -> int:
        with self._file.read() as db:
            return int(db.execute("SELECT COUNT(*) FROM responses WHERE created >= ?",
                                  (self._cutoff(),)).fetchone()[0])


def open_store(path: Path | str | None = None) -> ResponseStore | None:
    """The store, or None (with one warning) when its file cannot be opened: a read-only disk or a
    damaged file turns ``store`` off (responses say ``"store": false``), never fails a request."""
    try:
        return ResponseStore(path)
    except (sqlite3.Error, OSError) as exc:
        log.warning("stored responses at %s cannot be used (%s): responses are not stored", path or default_path(),
                    exc)
        return None


class ResponseStoreOpener:
    """A server's stored responses, opened at their first use (so a server that never stores creates no
    file). Call :meth:`get` off the event loop: an open may wait ``busy_timeout`` on the file's lock. A
    failed open is tried again ``retry_after`` seconds later (a disk mounted late, a lock let go), not
    given up for the server's life; :meth:`close` at shutdown closes the file, and nothing opens it
    after that."""

    def __init__(self, path: Path | str | None = None, retry_after: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.retry_after, self.clock = path, retry_after, clock
        self._lock = threading.Lock()
        self._store: ResponseStore | None = None
        self._failed_at: float | None = None
        self._closed = False

    def get(self) -> ResponseStore | None:
        """The store, or None while its file cannot be opened (nothing is stored, nothing found)."""
        with self._lock:
            if self._store is None and not self._closed and (
                    self._failed_at is None or self.clock() - self._failed_at >= self.retry_after):
                self._store = open_store(self.path)
                self._failed_at = None if self._store is not None else self.clock()
            return self._store

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._store is not None:
                self._store.close()
                self._store = None


__all__ = ["ResponseStore", "ResponseStoreOpener", "StoredResponse", "default_path", "open_store"]
