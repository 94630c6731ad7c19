"""Embeddings into pandas DataFrames: the pure-Python layer under the ``%embed`` magic.

Everything here works over a *backend*: any object with Ollama's
``embed(model, input, truncate=None, ...) -> EmbedResponse`` (the in-kernel ``Engine``, a
``RemoteBackend``, or the official ``ollama.Client``). The magic only parses its line and calls these
functions, so the same code serves notebooks, scripts and tests.

Frames come in two shapes, both indexed like the input texts so they join back onto the user's data:

- *narrow* (the default): columns ``text`` and ``embedding``, one ``float32`` 1-D array per cell;
- *wide* (``wide=True``): ``text`` plus one ``float32`` column per dimension, ``e0 .. e{d-1}``, which is
  what scikit-learn and plotting code want.

``frame.attrs["model"]`` records the model, so :func:`search` embeds a query with the same one.

Vectors are kept in the column cache (``store/column_cache.py``) as float32 bytes, batch by batch as
they arrive, so a re-run embeds only texts it has not seen with this model (``cache=False``: neither
read nor write; ``refresh=True``: embed again and overwrite).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..defaults import DEFAULT_EMBED_MODEL
from ..errors import InvalidRequest, MissingPackage, OllamaMagicError
from ..store.column_cache import embed_key
from .memo import open_memo

if TYPE_CHECKING:
    from ..backends import Backend

log = logging.getLogger("ollama_magic")

TEXT = "text"
EMBEDDING = "embedding"
NEAREST_COLUMNS = ["query_index", "query", "rank", "index", "text", "score"]
MATPLOTLIB_HINT = "pip install matplotlib"
_WIDE_COLUMN = re.compile(r"e(\d+)")
_LABEL_CHARS = 30  # how much of each text a plot label shows


# ---- texts in ----------------------------------------------------------------------------------


def texts_from(value: Any, column: str | None = None) -> pd.Series:
    """The texts to embed as a Series of ``str``, indexed like the input.

    Accepts one ``str``, a list/tuple (or 1-D array) of ``str``, a Series, or a DataFrame with
    ``column`` (or with exactly one text column). Everything is checked before anything is embedded,
    so a ``None`` on row 9,000 fails in a millisecond instead of after minutes of work; the error
    names the first bad item by position and index label.
    """
    if column is not None and not isinstance(value, pd.DataFrame):
        raise InvalidRequest(f"column={column!r} only applies to a DataFrame, not to {type(value).__name__}")
    series = _as_series(value, column)
    _check_texts(series)
    return series.map(str).astype(object).rename(TEXT)


def _as_series(value: Any, column: str | None) -> pd.Series:
    """Any accepted input as an object Series; its values are not checked yet."""
    if isinstance(value, str):
        return pd.Series([value], dtype=object)
    if isinstance(value, pd.DataFrame):
        return _column_of(value, column)
    if isinstance(value, pd.Series):
        return pd.Series(value.to_numpy(dtype=object), index=value.index, dtype=object)
    if isinstance(value, (list, tuple, pd.Index)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        return pd.Series(list(value), dtype=object)
    raise InvalidRequest(
        f"cannot embed a {type(value).__name__}: give a str, a list of str, a Series or a DataFrame column"
    )


def _column_of(frame: pd.DataFrame, column: str | None) -> pd.Series:
    if column is None:
        text_columns = [name for name in frame.columns if _is_text_column(frame[name])]
        if len(text_columns) != 1:
            found = ", ".join(map(repr, text_columns)) or "none"
            raise InvalidRequest(
                f"name the column to embed (the DataFrame has {len(text_columns)} text columns: {found})"
            )
        column = text_columns[0]
    if column not in frame.columns:
        raise InvalidRequest(f"no column {column!r} in the DataFrame (columns: {', '.join(map(repr, frame.columns))})")
    selected = frame[column]
    if isinstance(selected, pd.DataFrame):
        raise InvalidRequest(f"the DataFrame has several columns named {column!r}")
    return pd.Series(selected.to_numpy(dtype=object), index=frame.index, dtype=object)


def _is_text_column(column: pd.Series) -> bool:
    """A column whose non-missing values are all strings (an empty one counts if its dtype could hold them)."""
    kind = pd.api.types.infer_dtype(column.to_numpy(dtype=object), skipna=True)
    return kind == "string" or (kind == "empty" and pd.api.types.is_object_dtype(column))


def _check_texts(series: pd.Series) -> None:
    """Raise InvalidRequest naming the first item that is not a non-empty string."""
    values = series.to_numpy(dtype=object)
    is_str = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
    if not is_str.all():
        position = int(np.argmin(is_str))
        bad = values[position]
        what = "a missing value" if _is_missing(bad) else "not a str"
        raise InvalidRequest(
            f"cannot embed {_where(series, position)}: it is {what} ({type(bad).__name__}: {_short(bad)})"
        )
    is_empty = values == ""
    if np.any(is_empty):
        position = int(np.argmax(is_empty))
        raise InvalidRequest(f"cannot embed {_where(series, position)}: it is an empty string")


def _is_missing(value: Any) -> bool:
    missing = pd.isna(value)
    return isinstance(missing, (bool, np.bool_)) and bool(missing)


def _where(series: pd.Series, position: int) -> str:
    label = series.index[position]
    if isinstance(series.index, pd.RangeIndex) and label == position:
        return f"item {position}"
    return f"item {position} (index {label!r})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- embedding ---------------------------------------------------------------------------------


def embed_frame(
    backend: Backend,
    value: Any,
    *,
    model: str = DEFAULT_EMBED_MODEL,
    column: str | None = None,
    wide: bool = False,
    batch_size: int = 64,
    progress: bool | None = None,
    truncate: bool | None = None,
    cache: bool = True,
    refresh: bool = False,
) -> pd.DataFrame:
    """Embed texts into a DataFrame aligned to the input's index (see the module docstring for shapes).

    Each distinct text is embedded once and its vector scattered back to every row holding it: real
    columns repeat a lot (labels, categories), and the model is the slow part. Distinct texts go to
    the backend ``batch_size`` at a time, so a long column shows progress and a remote server never
    gets one enormous request. ``progress=None`` shows a bar only when there is more than one batch.
    ``truncate`` is passed to the backend when given (Ollama truncates over-long texts by default).
    Texts already in the column cache are not embedded again (``cache``, ``refresh``);
    ``frame.attrs["ollama_magic"]`` counts the ``cached`` and ``asked`` distinct texts.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InvalidRequest(f"batch_size must be a positive integer, not {batch_size!r}")
    texts = texts_from(value, column)
    codes, uniques = pd.factorize(texts)
    distinct = list(uniques)
    with open_memo(backend, model, cache=cache, refresh=refresh) as memo:
        keys = {text: embed_key(memo.identity, text, truncate) for text in distinct} if memo.active else {}
        found = memo.lookup_vectors(keys)
        missing = [text for text in distinct if text not in found]

        def keep(batch: list[str], block: np.ndarray) -> None:
            if keys:
                memo.keep_vectors({keys[text]: vector for text, vector in zip(batch, block)})

        fresh = _embed_distinct(backend, model, missing, int(batch_size), progress, truncate, keep, cached=len(found))
    vectors = _in_order(distinct, found, missing, fresh)
    frame = _frame(texts, vectors[codes] if len(texts) else None, wide)
    frame.attrs["model"] = model
    frame.attrs["ollama_magic"] = {"model": model, "distinct": len(distinct), "cached": len(found),
                                   "asked": len(missing)}
    return frame


def _in_order(distinct: list[str], found: dict[str, np.ndarray], missing: list[str], fresh: np.ndarray) -> np.ndarray:
    """One row per distinct text: from the cache or from this run's embeddings."""
    if not found:
        return fresh
    rows = dict(found)
    rows.update(zip(missing, fresh))
    widths = {len(vector) for vector in rows.values()}
    if len(widths) != 1:
        raise OllamaMagicError(f"cached and new vectors differ in length ({sorted(widths)}): embed again with "
                               "refresh=True (--refresh)")
    return np.stack([rows[text] for text in distinct]).astype(np.float32, copy=False)


def _embed_distinct(
    backend: Backend, model: str, distinct: list[str], batch_size: int, progress: bool | None, truncate: bool | None,
    keep: Callable[[list[str], np.ndarray], None] | None = None, cached: int = 0,
) -> np.ndarray:
    """One float32 row per distinct text, in order, asking the backend one batch at a time; ``keep``
    sees each batch's vectors as they arrive."""
    if not distinct:
        return np.zeros((0, 0), dtype=np.float32)
    batches = [distinct[start:start + batch_size] for start in range(0, len(distinct), batch_size)]
    show = len(batches) > 1 if progress is None else bool(progress)
    extra = {} if truncate is None else {"truncate": truncate}
    blocks = []
    with tqdm(total=len(distinct), desc="embedding", unit="text", disable=not show,
              postfix={"cached": cached} if cached else None) as bar:
        for batch in batches:
            block = _vectors(backend.embed(model=model, input=batch, **extra), len(batch))
            if keep is not None:
                keep(batch, block)
            blocks.append(block)
            bar.update(len(batch))
    widths = {block.shape[1] for block in blocks}
    if len(widths) != 1:
        raise OllamaMagicError(f"the backend returned vectors of different lengths across batches: {sorted(widths)}")
    return np.concatenate(blocks)


def _vectors(response: Any, expected: int) -> np.ndarray:
    """The response's embeddings as a float32 (n, d) matrix, checked against what was sent."""
    embeddings = response["embeddings"] if isinstance(response, dict) else response.embeddings
    if len(embeddings) != expected:
        raise OllamaMagicError(f"the backend returned {len(embeddings)} embeddings for {expected} texts")
    try:
        matrix = np.asarray(embeddings, dtype=np.float32)
    except ValueError:
        raise OllamaMagicError("the backend returned embeddings of different lengths") from None
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise OllamaMagicError(f"the backend returned embeddings of shape {matrix.shape}, not (texts, dimensions)")
    return matrix


def _frame(texts: pd.Series, matrix: np.ndarray | None, wide: bool) -> pd.DataFrame:
    """The result frame; ``matrix`` is None for an empty input (a wide frame then has only ``text``).

    Built from plain arrays, never by aligning on the index, so duplicated index labels are kept.
    """
    if wide:
        if matrix is None:
            return pd.DataFrame({TEXT: texts.to_numpy()}, index=texts.index)
        frame = pd.DataFrame(matrix, index=texts.index, columns=[f"e{i}" for i in range(matrix.shape[1])])
        frame.insert(0, TEXT, texts.to_numpy())
        return frame
    cells = pd.Series(list(matrix) if matrix is not None else [], dtype=object).to_numpy()
    return pd.DataFrame({TEXT: texts.to_numpy(), EMBEDDING: cells}, index=texts.index)


# ---- similarity --------------------------------------------------------------------------------


def vectors_of(frame: Any) -> np.ndarray:
    """The (n, d) float32 matrix of an embedded frame (narrow or wide), a Series of vectors, or an array."""
    if isinstance(frame, pd.DataFrame):
        if EMBEDDING in frame.columns:
            return _stack(frame[EMBEDDING])
        wide_columns = sorted(
            (int(m.group(1)), name) for name in frame.columns
            if isinstance(name, str) and (m := _WIDE_COLUMN.fullmatch(name))
        )
        if not wide_columns:
            raise InvalidRequest("the DataFrame has no 'embedding' column and no e0..e{d-1} columns: embed it first")
        return frame[[name for _, name in wide_columns]].to_numpy(dtype=np.float32)
    if isinstance(frame, pd.Series):
        return _stack(frame)
    matrix = np.asarray(frame, dtype=np.float32)
    if matrix.ndim == 1:
        return matrix[np.newaxis, :]
    if matrix.ndim != 2:
        raise InvalidRequest(f"expected vectors of shape (n, d), got shape {matrix.shape}")
    return matrix


def _stack(cells: pd.Series) -> np.ndarray:
    if len(cells) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    try:
        return np.stack([np.asarray(cell, dtype=np.float32) for cell in cells])
    except (ValueError, TypeError):
        raise InvalidRequest("the embedding column holds missing vectors or vectors of different lengths") from None


def cosine_similarity(a: Any, b: Any) -> np.ndarray:
    """The (len(a), len(b)) matrix of cosine similarities between two frames (or arrays) of vectors.

    Rows are normalised here, so vectors from backends that do not L2-normalise compare correctly; a
    zero vector has similarity 0 with everything.
    """
    left, right = vectors_of(a), vectors_of(b)
    if len(left) == 0 or len(right) == 0:
        return np.zeros((len(left), len(right)))
    if left.shape[1] != right.shape[1]:
        raise InvalidRequest(
            f"cannot compare {left.shape[1]}-dimensional vectors with {right.shape[1]}-dimensional ones "
            "(were they embedded with different models?)"
        )
    return _unit_rows(left) @ _unit_rows(right).T


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    rows = matrix.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def nearest(query_frame: pd.DataFrame, corpus_frame: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """For each query row, its ``k`` most similar corpus rows, in long format.

    One row per (query, match), ordered by query then rank, with a fresh RangeIndex and columns
    ``query_index`` (the query row's index label), ``query`` (its text), ``rank`` (1 = most similar),
    ``index`` (the corpus row's index label, so ``corpus.loc[result["index"]]`` fetches the rows),
    ``text`` (the corpus text) and ``score`` (cosine similarity). Ties keep corpus order. Fewer than
    ``k`` matches come back when the corpus is smaller.
    """
    k = _positive_k(k)
    query_texts = _texts_of(query_frame, "query_frame")
    corpus_texts = _texts_of(corpus_frame, "corpus_frame")
    scores = cosine_similarity(query_frame, corpus_frame)
    n_queries, n_corpus = scores.shape
    take = min(k, n_corpus)
    if n_queries == 0 or take == 0:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in NEAREST_COLUMNS}).astype(
            {"rank": np.int64, "score": np.float64}
        )
    order = np.argsort(-scores, axis=1, kind="stable")[:, :take]
    query_rows = np.repeat(np.arange(n_queries), take)
    corpus_rows = order.ravel()
    return pd.DataFrame({
        "query_index": query_frame.index.to_numpy(dtype=object)[query_rows],
        "query": query_texts[query_rows],
        "rank": np.tile(np.arange(1, take + 1), n_queries),
        "index": corpus_frame.index.to_numpy(dtype=object)[corpus_rows],
        "text": corpus_texts[corpus_rows],
        "score": scores[query_rows, corpus_rows],
    })


def _positive_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidRequest(f"k must be a positive integer, not {k!r}")
    return int(k)


def _texts_of(frame: Any, what: str) -> np.ndarray:
    if not isinstance(frame, pd.DataFrame) or TEXT not in frame.columns:
        raise InvalidRequest(f"{what} must be a DataFrame from embed_frame (with a 'text' column)")
    return frame[TEXT].to_numpy(dtype=object)


def search(
    backend: Backend, query: str, corpus_frame: pd.DataFrame, k: int = 5, model: str | None = None
) -> pd.DataFrame:
    """The ``k`` corpus rows most similar to ``query``, best first.

    The query is embedded with ``model``, by default the model that embedded the corpus
    (``corpus_frame.attrs["model"]``), since vectors of different models are not comparable. The
    result is indexed by the corpus rows' index labels, with columns ``text``, ``score`` and ``rank``.
    """
    k = _positive_k(k)
    model = model or corpus_frame.attrs.get("model") or DEFAULT_EMBED_MODEL
    query_frame = embed_frame(backend, query, model=model, progress=False)
    matches = nearest(query_frame, corpus_frame, k=k)
    result = matches.set_index("index")[["text", "score", "rank"]]
    result.index.name = corpus_frame.index.name
    result.attrs["model"] = model
    return result


# ---- 2-D projection ----------------------------------------------------------------------------


def project_2d(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's vectors projected on their first two principal components (PCA by SVD).

    Columns ``x`` (the direction of most variance), ``y`` (the next one) and ``text``, same index as
    the frame. Signs are fixed (the largest loading of each axis is positive) so the same data always
    plots the same way round. ``attrs["explained_variance_ratio"]`` holds each axis's share of the
    variance, for axis labels.
    """
    texts = _texts_of(frame, "frame")
    matrix = vectors_of(frame).astype(np.float64)
    coords, ratios = _pca_2d(matrix)
    projected = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "text": texts}, index=frame.index)
    projected.attrs["explained_variance_ratio"] = ratios
    return projected


def _pca_2d(matrix: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """-> ((n, 2) coordinates, share of variance on each axis); missing axes are zeros."""
    coords = np.zeros((len(matrix), 2))
    if len(matrix) == 0 or matrix.shape[1] == 0:
        return coords, (0.0, 0.0)
    centred = matrix - matrix.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    signs = np.sign(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, np.newaxis]
    coords[:, : len(axes)] = centred @ axes.T
    variance = singular**2
    total = variance.sum()
    shares = np.zeros(2)
    if total > 0:
        top = variance[:2] / total
        shares[: len(top)] = top
    return coords, (float(shares[0]), float(shares[1]))


def plot_projection(frame: pd.DataFrame, ax: Any = None, labels: bool = True) -> Any:
    """Scatter the frame's 2-D PCA projection with matplotlib; returns the Axes.

    ``labels`` writes each text (shortened) next to its point. matplotlib is optional: without it
    this raises MissingPackage with the install command.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingPackage(f"plotting embeddings needs matplotlib: {MATPLOTLIB_HINT}") from None
    projected = project_2d(frame)
    if ax is None:
        _, ax = plt.subplots()
    ax.scatter(projected["x"], projected["y"])
    if labels:
        for x, y, text in projected[["x", "y", "text"]].itertuples(index=False):
            ax.annotate(_label(text), (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    first, second = projected.attrs["explained_variance_ratio"]
    ax.set_xlabel(f"PC1 ({first:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({second:.0%} of variance)")
    return ax


def _label(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


__all__ = [
    "cosine_similarity",
    "embed_frame",
    "nearest",
    "plot_projection",
    "project_2d",
    "search",
    "texts_from",
    "vectors_of",
]
