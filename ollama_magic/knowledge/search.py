"""``%ollama search`` and ``Engine.search``: the chunks of named indexes nearest to a query, as a
DataFrame, with no chat model. The query is embedded on the backend with the model the index was
learned with (refused if that model's weights changed since); ``rerank`` reorders a larger pool of
candidates first (``%%chat --docs NAME --rerank MODEL``).

It imports nothing of the notebook, so the engine can offer it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..errors import InvalidRequest
from .index import Index
from .sources import FILE, cite, relative

if TYPE_CHECKING:
    from ..backends import Backend

#: ``rerank(query, texts) -> scores``: a reranker's scores for the candidates, higher is better
Reranker = Callable[[str, list[str]], list[float]]
#: how many candidates a reranked search reads per wanted chunk
RERANK_POOL = 4


def search(backend: Backend, names: str | Sequence[str], query: str, k: int = 5, *,
           rerank: Reranker | None = None, root: Path | None = None) -> pd.DataFrame:
    """The ``k`` chunks of the named indexes nearest to ``query`` (best first): rank, score (cosine
    similarity, or the reranker's score), source, position, cite (how a sources list names it), text,
    and index when several are searched. ``rerank`` reorders a larger pool of candidates first: K x
    :data:`RERANK_POOL` per index, at most the documents one rerank takes (``MAX_DOCUMENTS``) in all."""
    from ..store.column_cache import model_identity

    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidRequest(f"k must be a positive integer, not {k!r}")
    if not isinstance(query, str) or not query.strip():
        raise InvalidRequest("the query is empty")
    wanted = [names] if isinstance(names, str) else list(names)
    if not wanted:
        raise InvalidRequest("name at least one index")
    pool = int(k)
    if rerank is not None:
        from ..engine.rerank import MAX_DOCUMENTS  # what one rerank takes

        pool = min(pool * RERANK_POOL, MAX_DOCUMENTS)
    frames, vectors = [], {}
    for name in wanted:
        index = Index.open(name, root)
        model = index.info.model
        if model not in vectors:
            identity = model_identity(backend, model) or f"name:{model}"
            if identity != index.info.identity:
                raise InvalidRequest(f"index {name!r} was learned with {model} ({index.info.identity[:19]}), which "
                                     f"is now {identity[:19]}: its vectors no longer match; learn it again with "
                                     "--rebuild")
            vectors[model] = _query_vector(backend, model, query)
        found = index.search(vectors[model], pool)
        found["index"] = name
        frames.append(found)
    hits = pd.concat(frames, ignore_index=True).sort_values("score", ascending=False, kind="stable")
    if rerank is not None and len(hits):
        hits = hits.head(MAX_DOCUMENTS)  # several indexes' pools together: still what one rerank takes
        scores = list(rerank(query, hits.text.tolist()))
        if len(scores) != len(hits):
            raise InvalidRequest(f"the reranker gave {len(scores)} scores for {len(hits)} texts")
        hits = hits.assign(similarity=hits.score, score=[float(s) for s in scores])
        hits = hits.sort_values("score", ascending=False, kind="stable")
    return _result(hits.head(int(k)), several=len(wanted) > 1)


def reranker(backend: Backend, model: str) -> Reranker:
    """``rerank`` for ``search``: ``model`` ranks the candidates on ``backend`` (``Backend.rerank``: a
    cross-encoder, or any chat model by its P(yes)); scores come back in the candidates' order."""

    def scores(query: str, texts: list[str]) -> list[float]:
        response: Any = backend.rerank(model, query, texts)
        by_index = {r.index: r.relevance_score for r in response.results}
        return [float(by_index[i]) for i in range(len(texts))]

    return scores


def _query_vector(backend: Backend, model: str, query: str) -> np.ndarray:
    response: Any = backend.embed(model=model, input=[query])
    embeddings = response["embeddings"] if isinstance(response, dict) else response.embeddings
    return np.asarray(embeddings[0], dtype=np.float32)


def _result(hits: pd.DataFrame, *, several: bool) -> pd.DataFrame:
    out = pd.DataFrame({
        "rank": range(1, len(hits) + 1),
        "score": hits.score.round(4).to_numpy(),
        "source": [s if kind != FILE else relative(s) for s, kind in zip(hits.source, hits.kind)],
        "position": [p or (f"{a}" if a == b else f"{a}-{b}")
                     for p, a, b in zip(hits.position, hits.first_line, hits.last_line)],
        "cite": [cite(s, kind, p, a, b) for s, kind, p, a, b in
                 zip(hits.source, hits.kind, hits.position, hits.first_line, hits.last_line)],
        "text": hits.text.to_numpy(),
    })
    if "similarity" in hits:
        out.insert(2, "similarity", hits.similarity.round(4).to_numpy())
    if several:
        out["index"] = hits["index"].to_numpy()
    return out


__all__ = ["RERANK_POOL", "Reranker", "reranker", "search"]
