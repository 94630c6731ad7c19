"""``%ollama learn`` without the notebook: sources in, chunks embedded on the backend, rows in a named
index (``index.py``).

Embedding goes through ``embed_frame`` (``notebook/embeddings.py``), so every chunk's vector is kept
in the column cache: learning a file again after an edit embeds only its chunks that changed, and a
source whose digest is unchanged is not even read into chunks. Any backend that embeds works (the
in-kernel engine, an Ollama server); the index itself is always local.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..defaults import DEFAULT_EMBED_MODEL
from ..errors import InvalidRequest
from .chunking import CHUNK_TOKENS, OVERLAP_TOKENS, Chunk, check_sizes, chunk_text
from .index import Index, check_name
from .sources import FILE, Source, digest_of

if TYPE_CHECKING:
    from ..backends import Backend

#: chunks sent to ``embed_frame`` at once (it batches them by 64 itself); the progress bar moves per block
EMBED_BLOCK = 256


@dataclass
class LearnReport:
    """What one learn did; shown as one line."""

    name: str
    model: str
    learned: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    embedded: int = 0
    cached: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        parts = [f"index {self.name!r} ({self.model}): {len(self.learned)} source(s) learned "
                 f"({self.chunks_added} chunks: {self.embedded} embedded, {self.cached} from the cache)",
                 f"{len(self.unchanged)} unchanged"]
        if self.pruned or self.chunks_removed:
            parts.append(f"{self.chunks_removed} old chunks removed ({len(self.pruned)} pruned source(s))")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def learn(backend: Backend, name: str, sources: Sequence[Source], *, model: str = DEFAULT_EMBED_MODEL,
          size: int = CHUNK_TOKENS, overlap: int = OVERLAP_TOKENS, prune: bool = False, rebuild: bool = False,
          progress: bool | None = None, root: Path | None = None) -> LearnReport:
    """Learn ``sources`` into index ``name``: changed or new sources replace their chunks, unchanged
    ones are skipped; ``prune`` drops the chunks of files that no longer exist; ``rebuild`` starts the
    index afresh from ``sources`` (the way to change its embedding model).

    A rebuild embeds everything first and only then overwrites the index in one write, so a model
    that cannot embed (a typo'd ``-m``, a server that is down) leaves the old index as it was; a
    rebuild with no sources, or sources holding no text, is refused (it would only empty the index)."""
    from ..store.column_cache import model_identity

    start = time.perf_counter()
    check_name(name)
    check_sizes(size, overlap)
    if rebuild and not sources:
        raise InvalidRequest(f"--rebuild embeds index {name!r} again from the sources you name: give PATH|GLOB..., "
                             "--over EXPR or --cells (the index is left as it is)")
    identity = model_identity(backend, model) or f"name:{model}"
    index = Index.open(name, root) if Index.exists(name, root) else None
    if index is not None and not rebuild and index.info.identity != identity:
        raise InvalidRequest(f"index {name!r} holds vectors of {index.info.model} ({index.info.identity[:19]}), "
                             f"not of {model} ({identity[:19]}): learn with -m {index.info.model}, or --rebuild to "
                             f"embed everything again with {model}")
    report = LearnReport(name, index.info.model if index and not rebuild else model)
    known = index.learned() if index is not None and not rebuild else {}
    todo: list[tuple[Source, str]] = []
    for source in sources:
        digest = digest_of(source.digest, str(size), str(overlap))
        if source.name in known and known[source.name][1] == digest:
            report.unchanged.append(source.name)
        else:
            todo.append((source, digest))
    count = _counter(backend, model) if todo else None
    chunked = [(source, digest, _chunks(source, count, size, overlap)) for source, digest in todo]
    texts = [chunk.text for _, _, chunks in chunked for chunk, _ in chunks]
    if rebuild and not texts:
        raise InvalidRequest(f"--rebuild: the sources hold no text to learn; index {name!r} is left as it is")
    vectors, report.embedded, report.cached = _embed(backend, model, texts, progress)
    if rebuild:
        rows = [_rows(source, digest, chunks) for source, digest, chunks in chunked]
        report.chunks_removed = index.count() if index is not None else 0
        index = Index.create(name, model=model, identity=identity, dim=vectors.shape[1], root=root, overwrite=True,
                             rows={column: [v for r in rows for v in r[column]] for column in rows[0]},
                             vectors=vectors)
        report.learned = [source.name for source, _, _ in chunked]
        report.chunks_added = len(texts)
        chunked = []
    if index is None and len(vectors):
        index = Index.create(name, model=model, identity=identity, dim=vectors.shape[1], root=root)
    at = 0
    for source, digest, chunks in chunked:
        block = vectors[at:at + len(chunks)]
        at += len(chunks)
        if index is None:
            continue
        report.chunks_removed += known.get(source.name, ("", "", 0))[2]
        index.replace(source.name, _rows(source, digest, chunks), block)
        report.learned.append(source.name)
        report.chunks_added += len(chunks)
    if prune and index is not None:
        gone = [s for s, (kind, _, _) in known.items() if kind == FILE and not Path(s).exists()]
        index.remove(gone)
        report.pruned = gone
        report.chunks_removed += sum(known[s][2] for s in gone)
    if index is not None and (report.learned or report.pruned):
        index.compact()
    report.seconds = time.perf_counter() - start
    return report


def _counter(backend: Backend, model: str) -> Callable[[str], int]:
    """The embedding model's own token count (``tokenize`` on the backend), else the chars/token guess."""
    from ..notebook.context import token_counter

    return lru_cache(maxsize=65536)(token_counter(backend, model))


def _chunks(source: Source, count: Callable[[str], int] | None, size: int,
            overlap: int) -> list[tuple[Chunk, str]]:
    assert count is not None
    return [(chunk, passage.position) for passage in source.passages
            for chunk in chunk_text(passage.text, count, size=size, overlap=overlap, first_line=passage.first_line)]


def _rows(source: Source, digest: str, chunks: list[tuple[Chunk, str]]) -> dict[str, list[Any]]:
    return {
        "id": [digest_of(source.name, position, str(c.first_line), c.text)[:24] for c, position in chunks],
        "source": [source.name] * len(chunks), "kind": [source.kind] * len(chunks),
        "position": [position for _, position in chunks],
        "first_line": [c.first_line for c, _ in chunks], "last_line": [c.last_line for c, _ in chunks],
        "text": [c.text for c, _ in chunks], "digest": [digest] * len(chunks),
    }


def _embed(backend: Backend, model: str, texts: list[str], progress: bool | None) -> tuple[np.ndarray, int, int]:
    """The texts' vectors (from the column cache where it has them), with a chunks/s bar; -> (vectors,
    embedded, cached)."""
    from tqdm.auto import tqdm

    from ..notebook.embeddings import embed_frame, vectors_of

    if not texts:
        return np.zeros((0, 0), dtype=np.float32), 0, 0
    blocks, embedded, cached = [], 0, 0
    show = len(texts) > EMBED_BLOCK if progress is None else progress
    with tqdm(total=len(texts), desc=f"learning with {model}", unit="chunk", disable=not show) as bar:
        for start in range(0, len(texts), EMBED_BLOCK):
            frame = embed_frame(backend, pd.Series(texts[start:start + EMBED_BLOCK]), model=model, progress=False)
            stats = frame.attrs["ollama_magic"]
            embedded, cached = embedded + stats["asked"], cached + stats["cached"]
            blocks.append(vectors_of(frame))
            bar.update(len(frame))
            bar.set_postfix(cached=cached)
    return np.concatenate(blocks), embedded, cached


__all__ = ["EMBED_BLOCK", "LearnReport", "learn"]
