"""The column cache: every ``--over`` answer and every ``%embed`` vector, on disk, keyed by what
determines it, so a re-run cell answers from here without loading a model and a stopped column
resumes where it stopped.

Why SQLite through the standard library: it is the one embedded store every Python has, it commits
each row atomically (a ``kill -9`` loses at most the rows still being generated, never a finished
one: WAL with ``synchronous=NORMAL`` loses nothing when a process dies, only possibly on power
loss), and WAL plus a busy timeout lets two kernels read and write one file at once. Values are
the answer's text, or a vector's float32 bytes with its dimension (never JSON: a 384-d vector is
1.5 KiB, not 8). A trigger keeps the entries' total size in one row, so the least-recently-used
entries are evicted past the limit without summing the table on every write.

A key is the sha256 of a canonical JSON of everything that decides the result (:func:`chat_key`,
:func:`embed_key`); the model enters as its identity (:func:`model_identity`): the manifest digest
where the backend lists one (the in-kernel engine, an Ollama server), else the server's URL and the
model's name (an OpenAI-compatible server), else nothing can be trusted and nothing is cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import envconfig
from ..files import data_dir
from ..options import OPTION_TYPES
from .sqlite_file import SQLiteFile

log = logging.getLogger("ollama_magic")

#: Options that only place the work (threads, devices, batch size, mmap): they never change the text,
#: so a column asked with another ``num_thread`` is still answered from the cache. Every other option
#: (temperature, seed, top_k, top_p, num_predict, stop, num_ctx, penalties...) is part of the key.
PLACEMENT_OPTIONS = frozenset({"num_thread", "num_gpu", "main_gpu", "use_mmap", "num_batch", "numa", "low_vram",
                               "use_mlock"})
#: What a row costs beyond its key and value (SQLite's row and index overhead, roughly), so a cache of
#: many tiny answers is still bounded by its limit.
ROW_OVERHEAD = 64
#: Eviction goes down to this share of the limit, so a full cache does not evict on every write.
EVICT_TO = 0.9
DEFAULT_FILE = "column-cache.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    value BLOB NOT NULL,
    dim INTEGER,               -- NULL: text; else the float32 vector's length
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_used ON entries (used);
CREATE INDEX IF NOT EXISTS entries_model ON entries (model);
CREATE TABLE IF NOT EXISTS counters (model TEXT PRIMARY KEY, hits INTEGER NOT NULL, misses INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS total (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO total VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS entries_in AFTER INSERT ON entries
    BEGIN UPDATE total SET bytes = bytes + NEW.size; END;
CREATE TRIGGER IF NOT EXISTS entries_out AFTER DELETE ON entries
    BEGIN UPDATE total SET bytes = bytes - OLD.size; END;
CREATE TRIGGER IF NOT EXISTS entries_change AFTER UPDATE OF size ON entries
    BEGIN UPDATE total SET bytes = bytes - OLD.size + NEW.size; END;
"""


# ---- keys ---------------------------------------------------------------------------------------


def default_path() -> Path:
    """``$OLLAMA_MAGIC_CACHE``, else ``<data dir>/column-cache.sqlite`` (beside the conversations)."""
    env = envconfig.column_cache()
    return Path(env).expanduser() if env else data_dir() / DEFAULT_FILE


def cache_key(kind: str, model_id: str, **fields: Any) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of ``kind``, the model's identity and
    ``fields``: the one rule every key follows, so a future kind (label scores) keys the same way."""
    blob = json.dumps({"kind": kind, "model": model_id, **fields}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def keyed_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options that can change a reply, typed as the engine reads them (``temperature=0`` and
    ``0.0`` are one key), placement options left out (:data:`PLACEMENT_OPTIONS`)."""
    out: dict[str, Any] = {}
    for name, value in (options or {}).items():
        if name in PLACEMENT_OPTIONS or value is None:
            continue
        kind = OPTION_TYPES.get(name)
        if kind in (int, float) and isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            value = kind(value)
        out[name] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def chat_key(model_id: str, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any] | None = None,
             format: Any = None) -> str:
    """A chat reply's key: the model, every message sent (system and the rendered row prompt), the
    options that change sampling (seed included) and the format or JSON schema. The chat template
    and the Modelfile's parameters are in the model's digest."""
    return cache_key("chat", model_id, messages=[dict(m) for m in messages], options=keyed_options(options),
                     format=format)


def embed_key(model_id: str, text: str, truncate: bool | None = None, dimensions: int | None = None) -> str:
    """An embedding's key: the model, the text, and the two request fields that change the vector."""
    return cache_key("embed", model_id, text=text, truncate=truncate, dimensions=dimensions)


def model_identity(backend: Any, model: str) -> str | None:
    """What names ``model``'s weights, template and parameters on ``backend``: ``digest:<sha256>``
    where the backend lists the model with a digest (the engine; an Ollama server), else
    ``url:<server>|<model>`` where it has a URL but no digest (an OpenAI-compatible server: a model
    replaced there under the same name is not noticed; ``--refresh`` asks again). None when neither
    is known (a wrapper around a backend): then nothing is cached. Listing loads no model."""
    digest = _listed_digest(backend, model)
    if digest is None and callable(getattr(backend, "show", None)):
        try:
            backend.show(model)  # the engine registers an embedded default model on first use
        except Exception as exc:  # noqa: BLE001 - not found here: the row's own request says so
            log.debug("cannot show %s for the cache key: %s", model, exc)
        else:
            digest = _listed_digest(backend, model)
    if digest:
        return f"digest:{digest}"
    host = getattr(backend, "host", None)
    return f"url:{host}|{model}" if isinstance(host, str) and host else None


def _listed_digest(backend: Any, model: str) -> str | None:
    lister = getattr(backend, "list", None)
    if not callable(lister):
        return None
    wanted = normal_name(model)
    try:
        for entry in _listed(lister()):
            name = _field(entry, "model") or _field(entry, "name")
            if name and normal_name(name) == wanted:
                return _field(entry, "digest") or None
    except Exception as exc:  # noqa: BLE001 - a listing that fails must not fail the column
        log.debug("cannot list models for the cache key: %s", exc)
    return None


def _listed(response: Any) -> list[Any]:
    models = response.get("models") if isinstance(response, Mapping) else getattr(response, "models", None)
    return list(models or [])


def _field(entry: Any, name: str) -> Any:
    return entry.get(name) if isinstance(entry, Mapping) else getattr(entry, name, None)


def normal_name(name: str) -> str:
    """How the cache names a model (`gemma3` -> `gemma3:latest`), so `clear gemma3` finds its entries."""
    from ..names import normalize

    try:
        return normalize(name)
    except Exception:  # noqa: BLE001 - an OpenAI model id need not be an Ollama name
        return name


# ---- the store ----------------------------------------------------------------------------------


class ColumnCache:
    """One SQLite file of cached answers and vectors, shared by every kernel and process of this user.

    Each write is its own transaction (``BEGIN IMMEDIATE``: writers queue on the file's lock for up
    to ``busy_timeout`` seconds instead of failing), so what a killed process had finished stays.
    A ColumnCache may be used from several threads (one connection behind a lock)."""

    def __init__(self, path: Path | str | None = None, max_bytes: int | None = None,
                 busy_timeout: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.max_bytes = envconfig.column_cache_size() if max_bytes is None else int(max_bytes)
        self._file = SQLiteFile(self.path, _SCHEMA, busy_timeout)
        self._db = self._file.db  # used inside self._file.read()/write() only

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ColumnCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- text -----------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """The cached text for ``key``, or None; a hit marks it recently used."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """Every cached text among ``keys`` (one query per 500 keys, one write marking them used)."""
        return {k: bytes(v).decode() for k, (v, dim) in self._fetch(keys).items() if dim is None}

    def put(self, key: str, model: str, value: str) -> None:
        """Store (or replace) one text answer for ``model`` (its name, for ``clear`` and the stats)."""
        self._put([(key, model, value.encode(), None)])

    # ---- vectors --------------------------------------------------------------------------------

    def get_vectors(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Every cached vector among ``keys``, as float32 arrays (read-only views of the bytes)."""
        return {k: np.frombuffer(v, dtype=np.float32, count=dim) for k, (v, dim) in self._fetch(keys).items()
                if dim is not None}

    def put_vectors(self, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Store vectors (key -> 1-D array) as float32 bytes, all in one transaction."""
        rows = []
        for key, vector in vectors.items():
            flat = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
            rows.append((key, model, flat.tobytes(), int(flat.shape[0])))
        self._put(rows)

    # ---- counters, listing, clearing ------------------------------------------------------------

    def count(self, model: str, hits: int = 0, misses: int = 0) -> None:
        """Add to ``model``'s persisted hit and miss counters."""
        if not hits and not misses:
            return
        with self._file.write():
            self._db.execute("INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT (model) DO UPDATE SET "
                             "hits = hits + excluded.hits, misses = misses + excluded.misses", (model, hits, misses))

    def total_bytes(self) -> int:
        """The entries' bytes as the limit counts them (key + value + :data:`ROW_OVERHEAD` each)."""
        with self._file.read():
            return int(self._db.execute("SELECT bytes FROM total").fetchone()[0])

    def stats(self) -> pd.DataFrame:
        """One row per model: entries, bytes, hits, misses (models with counters but no entries too)."""
        with self._file.read():
            rows = self._db.execute(
                "SELECT model, SUM(n), SUM(b), SUM(h), SUM(m) FROM ("
                " SELECT model, COUNT(*) AS n, SUM(size) AS b, 0 AS h, 0 AS m FROM entries GROUP BY model"
                " UNION ALL SELECT model, 0, 0, hits, misses FROM counters) GROUP BY model ORDER BY model"
            ).fetchall()
        frame = pd.DataFrame(rows, columns=["model", "entries", "bytes", "hits", "misses"])
        return frame.astype({"entries": "int64", "bytes": "int64", "hits": "int64", "misses": "int64"})

    def clear(self, model: str | None = None) -> int:
        """Forget every entry (and counter) of ``model``, or of all models; returns the entries removed.
        Clearing all also gives the file's free pages back to the disk (VACUUM), when no one else is
        writing at that moment."""
        with self._file.write():
            if model is None:
                removed = self._db.execute("DELETE FROM entries").rowcount
                self._db.execute("DELETE FROM counters")
            else:
                removed = self._db.execute("DELETE FROM entries WHERE model = ?", (model,)).rowcount
                self._db.execute("DELETE FROM counters WHERE model = ?", (model,))
        if model is None:
            with self._file.read():
                try:
                    self._db.execute("VACUUM")
                except sqlite3.OperationalError as exc:  # another kernel is using the file: pages stay free for reuse
                    log.debug("column cache VACUUM skipped: %s", exc)
        return int(removed)

    # ---- internals ------------------------------------------------------------------------------

    def _fetch(self, keys: Iterable[str]) -> dict[str, tuple[bytes, int | None]]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, tuple[bytes, int | None]] = {}
        with self._file.read():
            for start in range(0, len(keys), 500):  # under SQLite's bound-parameter limit
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value, dim in self._db.execute(
                        f"SELECT key, value, dim FROM entries WHERE key IN ({marks})", chunk):  # noqa: S608 - only ?s
                    found[key] = (value, dim)
        if found:
            now, hit = time.time(), list(found)
            with self._file.write():
                for start in range(0, len(hit), 500):
                    chunk = hit[start:start + 500]
                    self._db.execute(f"UPDATE entries SET used = ? WHERE key IN ({','.join('?' * len(chunk))})",
                                     [now, *chunk])
        return found

    def _put(self, rows: list[tuple[str, str, bytes, int | None]]) -> None:
        if not rows:
            return
        now = time.time()
        with self._file.write():
            self._db.executemany(
                "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "model = excluded.model, value = excluded.value, dim = excluded.dim, size = excluded.size, "
                "used = excluded.used",
                [(key, model, value, dim, len(key) + len(value) + ROW_OVERHEAD, now, now)
                 for key, model, value, dim in rows])
            self._evict()

    def _evict(self) -> None:
        """Inside a write: drop the least recently used entries until the total is under the limit."""
        total = self._db.execute("SELECT bytes FROM total").fetchone()[0]
        if total <= self.max_bytes:
            return
        goal = int(self.max_bytes * EVICT_TO)
        while total > goal:
            over = self._db.execute("SELECT key, size FROM entries ORDER BY used LIMIT 256").fetchall()
            if not over:
                return
            drop, freed = [], 0
            for key, size in over:
                if total - freed <= goal:
                    break
                drop.append(key)
                freed += size
            self._db.execute(f"DELETE FROM entries WHERE key IN ({','.join('?' * len(drop))})", drop)
            total -= freed


def open_cache(path: Path | str | None = None) -> ColumnCache | None:
    """The cache, or None (with one warning) when its file cannot be opened: a read-only disk or a
    damaged file costs the column its memo, never its answers."""
    try:
        return ColumnCache(path)
    except (sqlite3.Error, OSError) as exc:
        log.warning("the column cache at %s cannot be used (%s): asking every row", path or default_path(), exc)
        return None


__all__ = ["PLACEMENT_OPTIONS", "ColumnCache", "cache_key", "chat_key", "default_path", "embed_key", "keyed_options",
           "model_identity", "normal_name", "open_cache"]
