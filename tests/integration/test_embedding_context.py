"""Embedding models on our own llama.cpp wrapper (``EmbeddingContext``) instead of ``llama_cpp.Llama``.

The wrapper must build the context ``Llama(embedding=True, flash_attn=True, ...)`` built (field by
field), answer pooling NONE and RANK models (all-MiniLM copies with the GGUF's pooling type changed),
and give back its memory when unloaded.
"""

from __future__ import annotations

import ctypes
import resource
import shutil
from pathlib import Path
from typing import Any

import gguf
import llama_cpp
import numpy as np
import pytest

from ollama_magic import Engine
from ollama_magic.engine.jobs import LoadOptions
from ollama_magic.engine.llama_context import ContextShape, EmbeddingContext, extra_buffers_safe, model_params
from ollama_magic.engine.runner import Runner
from ollama_magic.store import ModelStore

TEXTS = ["hello world", "a cat sat on the mat", "the quarterly report is due on Friday, not Monday"]
SHAPE = ContextShape(num_ctx=256, parallel=1, num_batch=256, threads=2, num_gpu=-1, use_mmap=True)


@pytest.fixture(scope="module")
def minilm(registered: ModelStore) -> Path:
    return registered.find("all-minilm").model_path


@pytest.fixture(scope="module")
def minilm_none(minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of all-MiniLM whose GGUF says pooling NONE (per-token outputs, nothing pooled)."""
    path = tmp_path_factory.mktemp("pooling") / "minilm-none.gguf"
    shutil.copyfile(minilm, path)
    reader = gguf.GGUFReader(path, "r+")
    reader.fields["bert.pooling_type"].parts[-1][0] = int(gguf.PoolingType.NONE)
    del reader  # flushes the memory map
    return path


@pytest.fixture(scope="module")
def minilm_reranker(minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM as a reranker: pooling RANK and a one-score classifier head (``cls.output``, random
    weights) on its [CLS] row. Without a head llama.cpp's RANK output is not a per-sequence score."""
    path = tmp_path_factory.mktemp("pooling") / "minilm-reranker.gguf"
    reader = gguf.GGUFReader(minilm)
    writer = gguf.GGUFWriter(str(path), reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        kind = field.types[0]
        value = int(gguf.PoolingType.RANK) if field.name == "bert.pooling_type" else field.contents()
        sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, kind, sub_type=sub_type)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
    rng = np.random.default_rng(0)
    writer.add_tensor("cls.output.weight", (rng.standard_normal((1, 384)) / 20).astype(np.float32))
    writer.add_tensor("cls.output.bias", np.zeros(1, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def numbers(struct: ctypes.Structure) -> dict[str, Any]:
    """A params struct's plain number and flag fields (pointers and callbacks left out)."""
    return {name: getattr(struct, name) for name, ctype in struct._fields_
            if getattr(ctype, "_type_", None) in tuple("bBhHiIlLqQfd?")}


def runner_for(path: Path) -> Runner:
    return Runner(path, LoadOptions(num_ctx=256, num_batch=256, num_gpu=0, num_thread=2, use_mmap=True,
                                    embedding=True), name=path.stem)


def llama_for(path: Path) -> llama_cpp.Llama:
    """What the runner loaded embedding models with before (runner._load, with SHAPE's numbers)."""
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_batch=256, n_ubatch=256, n_threads=2,
                           n_threads_batch=2, n_gpu_layers=-1, use_mmap=True, verbose=False, embedding=True,
                           flash_attn=True)


def test_the_embedding_context_sets_what_llama_embedding_set(minilm: Path) -> None:
    llm = llama_for(minilm)
    ectx = EmbeddingContext(minilm, SHAPE)
    try:
        assert numbers(ectx.context_params(SHAPE)) == numbers(llm.context_params)
        assert ectx.n_seq_max == llm.context_params.n_seq_max == min(256, llama_cpp.llama_max_parallel_sequences())
        assert ectx.pooling == llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_MEAN  # the GGUF's
        for text in (b"hello world", b"  two  spaces", "caf\u00e9 na\u00efve".encode()):
            tokens = llm.tokenize(text, add_bos=True, special=False)
            assert ectx.tokenize(text, add_bos=True, special=False) == tokens
            assert ectx.detokenize(tokens) == llm.detokenize(tokens)  # /api/detokenize as before
        theirs_model = numbers(llm.model_params)
    finally:
        ectx.close()
        llm.close()
    ours_model = numbers(model_params(SHAPE))
    # the one intended difference: extra buffer types only where they are safe (one loader for all models)
    assert ours_model.pop("use_extra_bufts") == extra_buffers_safe()
    theirs_model.pop("use_extra_bufts")
    assert ours_model == theirs_model


def test_pooling_none_gives_each_text_its_last_token_vector(minilm_none: Path) -> None:
    """Ollama's runner answers a context without pooled output with the last token's embedding."""
    path = minilm_none
    runner = runner_for(path)
    try:
        packed, count = runner.embed(TEXTS, True, normalize=False)
        alone = [runner.embed([text], True, normalize=False)[0][0] for text in TEXTS]
        normalized, _ = runner.embed(TEXTS, True)
        read = sum(len(runner.tokenize(text)) for text in TEXTS)  # [CLS] ... [SEP]
    finally:
        runner.close()
    assert count == read
    np.testing.assert_allclose(packed, alone, rtol=1e-5, atol=1e-5)  # packed sequences do not mix
    llm = llama_for(path)
    try:  # Llama.embed's per-token output, one text per call (its offsets are wrong past the first text)
        last_tokens = [llm.embed(text)[-1] for text in TEXTS]
    finally:
        llm.close()
    np.testing.assert_allclose(alone, last_tokens, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, rtol=1e-6)


def test_pooling_rank_gives_the_classifier_scores(minilm_reranker: Path) -> None:
    """A reranker's output is its n_cls_out scores per text (Llama.embed read n_embd floats, the
    rest past the end of llama.cpp's buffer)."""
    path = minilm_reranker
    runner = runner_for(path)
    try:
        scores, _ = runner.embed(TEXTS, True, normalize=False)
        alone = [runner.embed([text], True, normalize=False)[0][0] for text in TEXTS]
        normalized, _ = runner.embed(TEXTS, True)
    finally:
        runner.close()
    llm = llama_for(path)
    try:
        theirs = [llm.embed(text)[0] for text in TEXTS]  # the first float is the score
    finally:
        llm.close()
    assert [len(s) for s in scores] == [1] * len(TEXTS)
    assert scores == alone  # packed sequences do not mix
    np.testing.assert_allclose([s[0] for s in scores], theirs, rtol=1e-5, atol=1e-6)
    assert [abs(v[0]) for v in normalized] == [1.0] * len(TEXTS)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


def test_embedding_models_free_their_memory_across_load_unload_cycles(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        for _ in range(5):  # warm-up: allocator arenas and caches settle
            engine.embed("all-minilm", TEXTS, keep_alive=0)
        baseline = _rss_mb()
        for _ in range(25):
            engine.embed("all-minilm", TEXTS, keep_alive=0)
        assert engine.ps().models == []
        # all-MiniLM's weights are ~90 MB and its context some MB more: leaking either once per
        # cycle would add well over a GB
        assert _rss_mb() - baseline < 100
