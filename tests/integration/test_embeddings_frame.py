"""Embedding frames from the real all-MiniLM-L6-v2 model through the in-kernel Engine."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from ollama_magic import Engine
from ollama_magic.defaults import DEFAULT_EMBED_MODEL
from ollama_magic.notebook.embeddings import embed_frame, project_2d, search
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration

CORPUS = ["The cat sat on the mat", "Stock markets fell sharply today", "A kitten is sleeping on a rug"]
TEXTS = pd.Series(
    ["The cat sat on the mat", "Interest rates rose again", "The cat sat on the mat",
     "Bread is baked in an oven", "Rain is expected tomorrow", "Interest rates rose again"],
    index=pd.Index(["a", "b", "c", "d", "e", "f"], name="doc"),
)


@pytest.fixture(scope="module")
def engine(registered: ModelStore) -> Iterator[Engine]:
    with Engine(registered) as engine:
        yield engine


@pytest.fixture(scope="module")
def frame(engine: Engine) -> pd.DataFrame:
    return embed_frame(engine, TEXTS, batch_size=2)


def test_frame_holds_384_dim_float32_unit_vectors(frame: pd.DataFrame) -> None:
    assert frame.index.equals(TEXTS.index)
    assert frame["text"].tolist() == TEXTS.tolist()
    assert frame.attrs["model"] == DEFAULT_EMBED_MODEL
    matrix = np.stack(frame["embedding"].to_list())
    assert matrix.dtype == np.float32 and matrix.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-4)


def test_duplicate_texts_get_identical_vectors(frame: pd.DataFrame) -> None:
    np.testing.assert_array_equal(frame.loc["a", "embedding"], frame.loc["c", "embedding"])
    np.testing.assert_array_equal(frame.loc["b", "embedding"], frame.loc["f", "embedding"])
    assert not np.allclose(frame.loc["a", "embedding"], frame.loc["b", "embedding"])


def test_batched_vectors_equal_one_by_one_engine_vectors(engine: Engine, frame: pd.DataFrame) -> None:
    for label, text in TEXTS.items():
        alone = np.asarray(engine.embed(DEFAULT_EMBED_MODEL, [text]).embeddings[0])
        ours = frame.loc[label, "embedding"].astype(np.float64)
        cosine = ours @ alone / (np.linalg.norm(ours) * np.linalg.norm(alone))
        assert cosine > 0.9999, (label, text, cosine)


def test_wide_frame_matches_narrow(engine: Engine, frame: pd.DataFrame) -> None:
    wide = embed_frame(engine, TEXTS, wide=True)
    assert list(wide.columns[:2]) == ["text", "e0"] and wide.columns[-1] == "e383"
    # one batch here, batches of two in `frame`: llama.cpp's sums differ in the last digits (~1e-4)
    wide_matrix = wide.drop(columns="text").to_numpy(dtype=np.float64)
    narrow_matrix = np.stack(frame["embedding"].to_list()).astype(np.float64)
    assert np.all(np.sum(wide_matrix * narrow_matrix, axis=1) > 0.9999)


def test_search_ranks_a_cat_text_first_and_stocks_last(engine: Engine) -> None:
    corpus = embed_frame(engine, CORPUS)
    result = search(engine, "a small cat resting", corpus, k=3)
    assert result["text"].iloc[0] in (CORPUS[0], CORPUS[2])
    assert result["text"].iloc[-1] == CORPUS[1]
    assert result["score"].is_monotonic_decreasing
    assert result.index.tolist()[-1] == 1


def test_projection_puts_duplicate_texts_on_one_point(frame: pd.DataFrame) -> None:
    projected = project_2d(frame)
    assert projected.shape == (len(TEXTS), 3)
    same = projected.loc["a", ["x", "y"]].to_numpy(dtype=float) - projected.loc["c", ["x", "y"]].to_numpy(dtype=float)
    assert np.allclose(same, 0, atol=1e-5)
