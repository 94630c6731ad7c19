"""A column's side of the column cache (``store/column_cache.py``): which rows are already answered,
and keeping each answer as it finishes, for ``chat_over`` and ``embed_frame`` alike.

The rules both share live here once: the model's identity is looked up before anything is asked
(listing loads no model, so a fully cached column loads none); ``cache=False`` neither reads nor
writes; ``refresh=True`` reads nothing and overwrites; a backend whose model has no identity
(a wrapper without ``list`` or ``host``) is not cached; and a cache that cannot be written warns
once and the column goes on without it: the memo may cost a column its speed, never its answers.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, Hashable, Mapping, TypeVar

import numpy as np

from ..store.column_cache import ColumnCache, model_identity, normal_name, open_cache

log = logging.getLogger("ollama_magic")

K = TypeVar("K", bound=Hashable)


class ColumnMemo:
    """The cache for one column of one model; inactive (every lookup empty, every keep a no-op) when
    caching is off or the model has no identity."""

    def __init__(self, cache: ColumnCache | None, identity: str | None, model: str, *, refresh: bool = False) -> None:
        self.cache = cache if identity is not None else None
        self.identity = identity
        self.model = normal_name(model)
        self.refresh = refresh
        if cache is not None and self.cache is None:
            cache.close()

    @property
    def active(self) -> bool:
        return self.cache is not None

    def lookup(self, keys: Mapping[K, str]) -> dict[K, str]:
        """The cached texts of the rows in ``keys`` (row -> key); counts the hits and misses."""
        return self._lookup(keys, vectors=False)

    def lookup_vectors(self, keys: Mapping[K, str]) -> dict[K, np.ndarray]:
        """The cached vectors of the rows in ``keys``; counts the hits and misses."""
        return self._lookup(keys, vectors=True)

    def keep(self, key: str, value: str) -> None:
        """One finished answer, committed now (a kill -9 after this line loses nothing)."""
        self._write(lambda cache: cache.put(key, self.model, value))

    def keep_vectors(self, vectors: Mapping[str, np.ndarray]) -> None:
        """A batch of finished vectors, committed together."""
        self._write(lambda cache: cache.put_vectors(self.model, vectors))

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def __enter__(self) -> "ColumnMemo":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lookup(self, keys: Mapping[K, Any], *, vectors: bool) -> dict[K, Any]:
        if self.cache is None or not keys:
            return {}
        found: dict[str, Any] = {}
        if not self.refresh:
            try:
                found = (self.cache.get_vectors if vectors else self.cache.get_many)(keys.values())
            except sqlite3.Error as exc:
                self._give_up(exc)
                return {}
        hits = {row: found[key] for row, key in keys.items() if key in found}
        self._write(lambda cache: cache.count(self.model, hits=len(hits), misses=len(keys) - len(hits)))
        return hits

    def _write(self, action: Any) -> None:
        if self.cache is None:
            return
        try:
            action(self.cache)
        except sqlite3.Error as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        log.warning("the column cache failed (%s): this column goes on without it", exc)
        self.close()


def open_memo(backend: Any, model: str, *, cache: bool = True, refresh: bool = False) -> ColumnMemo:
    """The memo for ``model`` on ``backend``: inactive when ``cache`` is False or nothing names the model."""
    if not cache:
        return ColumnMemo(None, None, model)
    identity = model_identity(backend, model)
    return ColumnMemo(open_cache() if identity else None, identity, model, refresh=refresh)


__all__ = ["ColumnMemo", "open_memo"]
