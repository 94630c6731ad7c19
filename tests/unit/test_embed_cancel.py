"""A cancelled embed job (a reranker's pairs whose HTTP client went away) stops decoding, without a model:
a fake context counts the decodes."""

from __future__ import annotations

import threading

import llama_cpp
import numpy as np
import pytest

from ollama_magic.engine.embedder import EmbedJob, embed_jobs
from ollama_magic.errors import EngineError


class _Context:
    """What embed_packed reads of an EmbeddingContext; ``on_decode`` runs after each decode."""

    pooling = llama_cpp.LLAMA_POOLING_TYPE_RANK
    n_embd = n_pooled = 1
    n_batch = n_ctx = 64
    n_seq_max = 8

    def __init__(self, on_decode=lambda: None) -> None:  # noqa: ANN001
        self.decodes = 0
        self.on_decode = on_decode

    def clear(self) -> None:
        pass

    def decode(self, entries: list) -> int:
        self.decodes += 1
        self.on_decode()
        return 0

    def pooled(self, seq: int) -> np.ndarray:
        return np.ones(1, dtype=np.float32)


def test_a_job_cancelled_midway_decodes_no_more_pairs() -> None:
    gone = threading.Event()
    ectx = _Context(on_decode=lambda: gone.set() if ectx.decodes == 3 else None)
    job = EmbedJob([f"pair {i}" for i in range(100)], [[1, 2, 3]] * 100, False, alone=True, cancel=gone)
    embed_jobs(ectx, [job])  # type: ignore[arg-type]
    assert ectx.decodes == 3
    with pytest.raises(EngineError, match="cancelled"):
        job.future.result()


def test_packed_jobs_stop_only_when_all_of_them_are_cancelled() -> None:
    gone = threading.Event()
    gone.set()
    cancelled = EmbedJob(["a"], [[1, 2]], True, cancel=gone)
    wanted = EmbedJob(["b"], [[3, 4]], True)
    embed_jobs(_Context(), [cancelled, wanted])  # type: ignore[arg-type]
    assert wanted.future.result()[1] == 2
