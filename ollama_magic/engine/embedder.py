"""Embedding requests packed into shared llama_decode calls: the embedding counterpart of ``decoder.py``.

Callers tokenize on their own threads (llama.cpp's tokenizer is thread-safe) and queue an
:class:`EmbedJob`; the model's owner thread then packs the texts of every request queued at that
moment into micro-batches (:func:`embed_jobs`), so concurrent requests share decodes.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import llama_cpp
import numpy as np

from ..errors import InvalidRequest
from .jobs import EngineError
from .llama_context import EmbeddingContext

__all__ = ["EMBED_PACK_TOKENS", "EmbedJob", "embed_jobs", "embed_packed", "tokenize_texts"]

#: Tokens per llama_decode when embedding. Sequences in one micro-batch attend over all of it
#: (masked), so cost grows with its square: on all-MiniLM (2 CPU threads) packing 512 tokens
#: without flash attention gave 116 texts/s; with flash attention, packs of 64-256 tokens all gave
#: 310-330 texts/s (within noise). A text longer than the pack goes alone.
EMBED_PACK_TOKENS = 256


@dataclass
class EmbedJob:
    """One embed request's tokenized texts, waiting on the owner thread to be packed with the others."""

    texts: list[str]
    token_lists: list[list[int]]
    normalize: bool
    future: "Future[tuple[list[list[float]], int]]" = field(default_factory=Future)
    #: each text in a decode of its own (a reranker's pairs): ggml's matrix kernels differ with the
    #: batch's size, so a packed sequence's numbers move by ~1e-3 (f16 weights) with its neighbours;
    #: alone, a pair scores the same in every request, and as llama-server scores it (one per decode)
    alone: bool = False
    #: the request's cancel event (an HTTP client that went away): set, the texts not yet decoded are not
    cancel: threading.Event | None = None

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


def tokenize_texts(ectx: EmbeddingContext, texts: list[str], truncate: bool) -> list[list[int]]:
    """Each text's tokens (any thread), cut to what one decode holds, or refused when ``truncate`` is off."""
    limit = min(ectx.n_ctx, ectx.n_batch)  # a sequence must fit one decode
    token_lists = []
    for text in texts:
        tokens = ectx.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        if len(tokens) > limit:
            if not truncate:
                raise InvalidRequest("the input length exceeds the context length")
            tokens = tokens[:limit]
        token_lists.append(tokens)
    return token_lists


def embed_jobs(ectx: EmbeddingContext, jobs: list[EmbedJob]) -> int:
    """Owner thread: embed the texts of ``jobs`` together, hand each request its own vectors (or the
    error); -> the llama_decode calls it took."""
    packed = [job for job in jobs if not job.alone]
    decodes = _embed_group(ectx, packed, None) if packed else 0
    return decodes + sum(_embed_group(ectx, [job], 1) for job in jobs if job.alone)


def _embed_group(ectx: EmbeddingContext, jobs: list[EmbedJob], pack: int | None) -> int:
    try:  # stopped only when every job in it was cancelled (the others still want their vectors)
        matrix, decodes = embed_packed(ectx, [tokens for job in jobs for tokens in job.token_lists], pack,
                                       stop=lambda: all(job.cancelled() for job in jobs))
    except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)
        return 0
    start = 0
    for job in jobs:
        rows = matrix[start:start + len(job.token_lists)]
        start += len(job.token_lists)
        if job.normalize:
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
            rows = rows / np.where(norms > 0, norms, 1.0)
        job.future.set_result((rows.tolist(), sum(map(len, job.token_lists))))
    return decodes


def embed_packed(ectx: EmbeddingContext, token_lists: list[list[int]], pack_tokens: int | None = None,
                 stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, int]:
    """One vector per text (shortest first, several sequences per decode, one seq id each) and the
    number of llama_decode calls that took.

    ``Llama.embed`` packed up to n_batch tokens (512) per decode and truncated inputs to n_batch;
    here the pack is smaller (faster, see above) while n_batch stays at n_ctx, so any single text
    that fits the context is embedded whole. Pooled models give llama.cpp's pooled vector per
    sequence (a reranker's RANK pooling: its ``n_cls_out`` scores); a model whose GGUF says pooling
    NONE gives its last token's vector, as Ollama's runner falls back to when a context has no
    pooled output. ``stop`` is asked before each decode: true, the rest is not decoded (EngineError).
    """
    last_token = ectx.pooling == llama_cpp.LLAMA_POOLING_TYPE_NONE
    out = np.zeros((len(token_lists), ectx.n_embd if last_token else ectx.n_pooled), dtype=np.float32)
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    entries: list[tuple[int, int, int, bool]] = []  # (token, position, seq id, output) for one decode
    members: list[int] = []  # the texts in it, by seq id
    ends: list[int] = []  # each one's last token's place in it
    decodes = 0

    def decode() -> None:
        nonlocal decodes
        if stop is not None and stop():
            raise EngineError(f"embedding cancelled after {decodes} of its decodes: the request was cancelled")
        decodes += 1
        ectx.clear()
        code = ectx.decode(entries)
        if code != 0:
            raise EngineError(f"llama_decode returned {code}")
        for seq, index in enumerate(members):
            out[index] = ectx.token_vector(ends[seq]) if last_token else ectx.pooled(seq)

    # a small num_ctx makes the batch itself smaller; ``pack_tokens`` 1: one text per decode
    pack = min(EMBED_PACK_TOKENS if pack_tokens is None else pack_tokens, ectx.n_batch)
    for index in order:
        tokens = token_lists[index]
        if not tokens:
            raise EngineError("an input tokenized to no tokens")
        if len(tokens) > ectx.n_batch:  # tokenize_texts cuts or refuses these: never past the batch
            raise EngineError(f"an input of {len(tokens)} tokens is longer than the batch ({ectx.n_batch})")
        if members and (len(entries) + len(tokens) > pack or len(members) >= ectx.n_seq_max):
            decode()
            entries, members, ends = [], [], []
        seq = len(members)
        # every token an output, as llama.cpp requires of an embedding context
        entries.extend((token, pos, seq, True) for pos, token in enumerate(tokens))
        members.append(index)
        ends.append(len(entries) - 1)
    if members:
        decode()
    ectx.clear()
    return out, decodes
