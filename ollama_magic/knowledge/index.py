"""The persisted index of ``%ollama learn``: one LanceDB table per index name under
``<data dir>/indexes`` (``$OLLAMA_MAGIC_INDEXES``), shared by every notebook and kernel of the user.

Why LanceDB: it is an embedded store (a directory of Lance files, no server) whose rows carry their
vector beside their text and source, so nothing else must be kept consistent with it (FAISS needs a
sidecar for the texts, and a crash between the two writes leaves them disagreeing); it deletes by
predicate (``source = '...'``), which is how a changed file's chunks are replaced; and every write (an
append, a delete, a whole table overwritten) is an atomic new version. A changed source's new chunks are
appended before its old ones are deleted, and ``--rebuild`` overwrites the table in one write once every
vector exists, so a failure or a kernel killed mid-learn never leaves a source without chunks (at worst
with both versions for a moment, which the next learn of it tidies up). sqlite-vec needs
``sqlite3.enable_load_extension``, which some Pythons (macOS's system one) are built without. Search
is exact (a flat scan): docs/BENCHMARKS.md has its p50/p95 at 100,000 chunks.

The table's schema metadata records the embedding model and its identity (the manifest digest): a
search or a learn with another model's vectors is refused, since distances between two models' vectors
mean nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import envconfig
from ..errors import InvalidRequest, NotFound
from ..files import data_dir

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: what the rows hold besides the vector
COLUMNS = ("id", "source", "kind", "position", "first_line", "last_line", "text", "digest")


def indexes_dir() -> Path:
    """``$OLLAMA_MAGIC_INDEXES``, else ``<data dir>/indexes``."""
    env = envconfig.indexes()
    return Path(env).expanduser() if env else data_dir() / "indexes"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidRequest(f"index name {name!r}: use letters, digits, '_', '-' and '.' (up to 128), "
                             "starting with a letter or digit")
    return name


def _connect(root: Path | None = None) -> Any:
    import lancedb

    path = root or indexes_dir()
    path.mkdir(parents=True, exist_ok=True)
    return lancedb.connect(str(path))


def _names(db: Any) -> list[str]:
    listed = db.list_tables()
    return list(getattr(listed, "tables", listed))


def _literal(text: str) -> str:
    """A string as a SQL literal in a LanceDB filter."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class IndexInfo:
    name: str
    model: str
    identity: str
    dim: int


class Index:
    """One named index (a LanceDB table)."""

    def __init__(self, table: Any, info: IndexInfo, root: Path) -> None:
        self.table, self.info, self.root = table, info, root

    # ---- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, name: str, root: Path | None = None) -> Index:
        """An existing index; NotFound names the ones there are."""
        db = _connect(root)
        check_name(name)
        if name not in _names(db):
            there = ", ".join(sorted(_names(db))) or "none yet"
            raise NotFound(f"no index named {name!r} (indexes: {there}); make one with %ollama learn {name} PATHS")
        table = db.open_table(name)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        info = IndexInfo(name, meta.get("model", ""), meta.get("identity", ""), int(meta.get("dim", "0")))
        return cls(table, info, root or indexes_dir())

    @classmethod
    def create(cls, name: str, *, model: str, identity: str, dim: int, root: Path | None = None,
               rows: dict[str, Sequence[Any]] | None = None, vectors: np.ndarray | None = None,
               overwrite: bool = False) -> Index:
        """A new index, empty or holding ``rows``; ``overwrite`` replaces an index of that name in one
        atomic write (``--rebuild``: the old one stays whole until the new one is complete)."""
        import pyarrow as pa

        db = _connect(root)
        check_name(name)
        schema = pa.schema(
            [("id", pa.string()), ("source", pa.string()), ("kind", pa.string()), ("position", pa.string()),
             ("first_line", pa.int32()), ("last_line", pa.int32()), ("text", pa.string()), ("digest", pa.string()),
             ("vector", pa.list_(pa.float32(), dim))],
            metadata={"model": model, "identity": identity, "dim": str(dim), "created": str(time.time())})
        data = _arrow(schema, name, dim, rows, vectors) if rows is not None and vectors is not None else None
        db.create_table(name, data=data, schema=schema, mode="overwrite" if overwrite else "create")
        return cls.open(name, root)

    @staticmethod
    def exists(name: str, root: Path | None = None) -> bool:
        return check_name(name) in _names(_connect(root))

    # ---- writing ---------------------------------------------------------------------------------

    def learned(self) -> dict[str, tuple[str, str, int]]:
        """Each learned source's (kind, digest, chunks): the digest decides whether learning it again
        changes anything."""
        frame = self.table.search().select(["source", "kind", "digest"]).limit(None).to_pandas()
        learned: dict[str, tuple[str, str, int]] = {}
        for (source, kind, digest), n in frame.groupby(["source", "kind", "digest"]).size().items():
            if source in learned:  # two versions (a replace cut off before its delete): learn it again
                learned[source] = (kind, "", learned[source][2] + int(n))
            else:
                learned[source] = (kind, digest, int(n))
        return learned

    def sources(self) -> pd.DataFrame:
        """One row per source: kind, chunks, characters."""
        frame = self.table.search().select(["source", "kind", "text"]).limit(None).to_pandas()
        if frame.empty:
            return pd.DataFrame(columns=["source", "kind", "chunks", "chars"])
        frame["chars"] = frame.text.str.len()
        return (frame.groupby(["source", "kind"], sort=True).agg(chunks=("text", "size"), chars=("chars", "sum"))
                .reset_index())

    def replace(self, source: str, rows: dict[str, Sequence[Any]], vectors: np.ndarray) -> None:
        """The source's chunks become ``rows`` (of one digest): the new rows are appended before the
        old ones are deleted, so a failure at any step leaves the source searchable."""
        where = f"source = {_literal(source)}"
        if not len(vectors):
            self.table.delete(where)
            return
        digest = _literal(str(rows["digest"][0]))
        self.table.delete(f"{where} AND digest = {digest}")  # what a replace cut off before its delete appended
        self.add(rows, vectors)
        self.table.delete(f"{where} AND digest != {digest}")

    def add(self, rows: dict[str, Sequence[Any]], vectors: np.ndarray) -> None:
        self.table.add(_arrow(self.table.schema, self.info.name, self.info.dim, rows, vectors))

    def remove(self, sources: Iterable[str]) -> None:
        wanted = list(sources)
        for start in range(0, len(wanted), 500):  # one filter per few hundred sources
            self.table.delete("source IN (" + ", ".join(_literal(s) for s in wanted[start:start + 500]) + ")")

    def compact(self) -> None:
        """Merge the small files that each learn adds; versions older than LanceDB's default (a week) go."""
        try:
            self.table.optimize()
        except Exception:  # noqa: BLE001, S110 - compaction is housekeeping: a failure leaves a correct index
            pass

    # ---- reading ---------------------------------------------------------------------------------

    def count(self) -> int:
        return int(self.table.count_rows())

    def search(self, vector: np.ndarray, k: int) -> pd.DataFrame:
        """The ``k`` nearest chunks by cosine similarity (``score``: 1 is the same direction)."""
        found = (self.table.search(np.asarray(vector, dtype=np.float32), vector_column_name="vector")
                 .distance_type("cosine").limit(k).select([*COLUMNS, "_distance"]).to_pandas())
        found["score"] = 1.0 - found.pop("_distance").astype(float)
        return found

    def bytes(self) -> int:
        path = self.root / f"{self.info.name}.lance"
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0

    def updated(self) -> pd.Timestamp:
        return pd.Timestamp(self.table.list_versions()[-1]["timestamp"])


def _arrow(schema: Any, name: str, dim: int, rows: dict[str, Sequence[Any]], vectors: np.ndarray) -> Any:
    """``rows`` and their vectors as an Arrow table of the index's schema."""
    import pyarrow as pa

    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise InvalidRequest(f"vectors of length {matrix.shape[-1]} do not fit index {name!r} ({dim})")
    vector = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), dim)
    columns = {column: rows[column] for column in COLUMNS}
    return pa.Table.from_pydict({**columns, "vector": vector}, schema=schema)


def list_indexes(root: Path | None = None) -> pd.DataFrame:
    """``%ollama learn --list``: name, model, chunks, sources, bytes, updated."""
    rows = []
    for name in sorted(_names(_connect(root))):
        index = Index.open(name, root)
        sources = index.table.search().select(["source"]).limit(None).to_arrow().column("source")
        rows.append({"name": name, "model": index.info.model, "chunks": index.count(),
                     "sources": len(set(sources.to_pylist())), "bytes": index.bytes(), "updated": index.updated()})
    return pd.DataFrame(rows, columns=["name", "model", "chunks", "sources", "bytes", "updated"])


def delete_index(name: str, root: Path | None = None) -> None:
    db = _connect(root)
    if check_name(name) not in _names(db):
        raise NotFound(f"no index named {name!r}")
    db.drop_table(name)


__all__ = ["COLUMNS", "Index", "IndexInfo", "check_name", "delete_index", "indexes_dir", "list_indexes"]
