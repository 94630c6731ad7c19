"""Embeddings into DataFrames (ollama_magic.notebook.embeddings) over a fake, deterministic backend."""

from __future__ import annotations

import hashlib
import math
import sys
from typing import Any

import numpy as np
import ollama
import pandas as pd
import pytest

from ollama_magic.defaults import DEFAULT_EMBED_MODEL
from ollama_magic.errors import InvalidRequest, MissingPackage, OllamaMagicError
from ollama_magic.notebook import embeddings as emb
from ollama_magic.notebook.embeddings import (
    cosine_similarity,
    embed_frame,
    nearest,
    plot_projection,
    project_2d,
    search,
    texts_from,
)

DIMS = 8


def fake_vector(text: str) -> list[float]:
    """A unit vector that depends only on the text (sha256 bytes mapped to [-1, 1])."""
    raw = np.frombuffer(hashlib.sha256(text.encode()).digest()[:DIMS], dtype=np.uint8) / 127.5 - 1.0
    return list(raw / np.linalg.norm(raw))


class FakeBackend:
    """Counts calls and records what was sent; answers like Ollama's embed."""

    def __init__(self, vector=fake_vector) -> None:
        self.calls: list[dict[str, Any]] = []
        self.vector = vector

    def embed(self, model: str = "", input: list[str] | str = "", truncate: bool | None = None, **kw: Any):
        self.calls.append({"model": model, "input": list(input), "truncate": truncate})
        return ollama.EmbedResponse(model=model, embeddings=[self.vector(t) for t in input],
                                    prompt_eval_count=len(input))

    @property
    def sent(self) -> list[str]:
        return [text for call in self.calls for text in call["input"]]


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def narrow(texts: list[str], vectors: list[list[float]], index: list[Any] | None = None) -> pd.DataFrame:
    cells = pd.Series([np.asarray(v, dtype=np.float32) for v in vectors], dtype=object).to_numpy()
    return pd.DataFrame({"text": texts, "embedding": cells}, index=index)


def wide_of(frame: pd.DataFrame) -> pd.DataFrame:
    matrix = np.stack(frame["embedding"].to_list())
    out = pd.DataFrame(matrix, index=frame.index, columns=[f"e{i}" for i in range(matrix.shape[1])])
    out.insert(0, "text", frame["text"].to_numpy())
    return out


# ---- texts_from --------------------------------------------------------------------------------


def test_texts_from_one_string_is_a_one_row_series() -> None:
    texts = texts_from("hello")
    assert texts.tolist() == ["hello"]
    assert isinstance(texts.index, pd.RangeIndex)


def test_texts_from_list_and_tuple_get_a_range_index() -> None:
    for value in (["a", "b", "c"], ("a", "b", "c")):
        texts = texts_from(value)
        assert texts.tolist() == ["a", "b", "c"]
        assert texts.index.equals(pd.RangeIndex(3))


def test_texts_from_series_keeps_its_index() -> None:
    series = pd.Series(["x", "y"], index=pd.Index(["r1", "r2"], name="id"))
    texts = texts_from(series)
    assert texts.tolist() == ["x", "y"]
    assert texts.index.equals(series.index) and texts.index.name == "id"


def test_texts_from_dataframe_column_keeps_the_frame_index() -> None:
    df = pd.DataFrame({"title": ["a", "b"], "body": ["long a", "long b"], "n": [1, 2]}, index=[10, 20])
    texts = texts_from(df, column="body")
    assert texts.tolist() == ["long a", "long b"]
    assert texts.index.tolist() == [10, 20]


def test_texts_from_dataframe_with_one_text_column_needs_no_column_name() -> None:
    df = pd.DataFrame({"n": [1, 2], "review": ["good", "bad"], "score": [0.5, 0.1]})
    assert texts_from(df).tolist() == ["good", "bad"]


def test_texts_from_dataframe_with_string_dtype_column() -> None:
    df = pd.DataFrame({"review": pd.array(["good", "bad"], dtype="string")})
    texts = texts_from(df)
    assert texts.tolist() == ["good", "bad"]
    assert all(type(t) is str for t in texts)


def test_texts_from_dataframe_with_two_text_columns_asks_for_a_name() -> None:
    df = pd.DataFrame({"title": ["a"], "body": ["b"]})
    with pytest.raises(InvalidRequest, match="'title', 'body'"):
        texts_from(df)


def test_texts_from_unknown_column_names_the_columns() -> None:
    with pytest.raises(InvalidRequest, match="no column 'text'.*'title'"):
        texts_from(pd.DataFrame({"title": ["a"]}), column="text")


def test_texts_from_column_only_applies_to_a_dataframe() -> None:
    with pytest.raises(InvalidRequest, match="only applies to a DataFrame"):
        texts_from(["a"], column="a")


@pytest.mark.parametrize("bad, type_name", [(None, "NoneType"), (math.nan, "float"), (3, "int"), (pd.NA, "NAType")])
def test_texts_from_names_the_first_non_string_position_and_type(bad: Any, type_name: str) -> None:
    with pytest.raises(InvalidRequest, match=rf"item 2\b.*{type_name}"):
        texts_from(["ok", "fine", bad, None])


def test_texts_from_names_the_index_label_of_a_bad_item() -> None:
    series = pd.Series(["ok", None], index=["first", "second"], dtype=object)
    with pytest.raises(InvalidRequest, match=r"item 1 \(index 'second'\): it is a missing value \(NoneType"):
        texts_from(series)


def test_texts_from_calls_a_number_not_a_str() -> None:
    with pytest.raises(InvalidRequest, match=r"item 0: it is not a str \(int: 42\)"):
        texts_from([42])


def test_texts_from_reports_a_missing_cell_of_a_string_column() -> None:
    df = pd.DataFrame({"review": pd.array(["good", None], dtype="string")}, index=["r1", "r2"])
    with pytest.raises(InvalidRequest, match=r"item 1 \(index 'r2'\): it is a missing value"):
        texts_from(df)


def test_texts_from_refuses_empty_strings_and_says_so() -> None:
    with pytest.raises(InvalidRequest, match=r"item 1\b.*empty string"):
        texts_from(["ok", "", "fine"])


def test_texts_from_refuses_other_types() -> None:
    with pytest.raises(InvalidRequest, match="cannot embed a dict"):
        texts_from({"a": "b"})


def test_texts_from_empty_input_is_an_empty_series() -> None:
    assert len(texts_from([])) == 0
    assert len(texts_from(pd.Series([], dtype=object))) == 0


# ---- embed_frame -------------------------------------------------------------------------------


def test_embed_frame_is_aligned_to_a_custom_index(backend: FakeBackend) -> None:
    series = pd.Series(["b text", "a text", "c text"], index=pd.Index([30, 10, 20], name="doc"))
    frame = embed_frame(backend, series)
    assert frame.index.equals(series.index) and frame.index.name == "doc"
    assert list(frame.columns) == ["text", "embedding"]
    assert frame["text"].tolist() == series.tolist()
    for label, text in series.items():
        np.testing.assert_allclose(frame.loc[label, "embedding"], fake_vector(text), rtol=1e-6)


def test_embed_frame_from_a_dataframe_column_joins_back(backend: FakeBackend) -> None:
    df = pd.DataFrame({"title": ["one", "two", "three"], "n": [1, 2, 3]}, index=["x", "y", "z"])
    frame = embed_frame(backend, df, column="title")
    joined = df.join(frame[["embedding"]])
    np.testing.assert_allclose(joined.loc["y", "embedding"], fake_vector("two"), rtol=1e-6)


def test_embed_frame_cells_are_float32_vectors(backend: FakeBackend) -> None:
    frame = embed_frame(backend, ["one", "two"])
    for cell in frame["embedding"]:
        assert isinstance(cell, np.ndarray) and cell.dtype == np.float32 and cell.shape == (DIMS,)


def test_embed_frame_embeds_each_distinct_text_once_and_scatters_back(backend: FakeBackend) -> None:
    texts = ["a", "b", "a", "c", "b", "a"]
    frame = embed_frame(backend, texts)
    assert sorted(backend.sent) == ["a", "b", "c"]
    assert len(frame) == len(texts)
    for row, text in zip(frame["embedding"], texts):
        np.testing.assert_allclose(row, fake_vector(text), rtol=1e-6)


def test_embed_frame_keeps_duplicated_index_labels(backend: FakeBackend) -> None:
    series = pd.Series(["a", "b", "c"], index=[1, 1, 2])
    for wide in (False, True):
        frame = embed_frame(backend, series, wide=wide)
        assert frame.index.tolist() == [1, 1, 2]
        assert frame["text"].tolist() == ["a", "b", "c"]


def test_embed_frame_sends_one_call_per_batch(backend: FakeBackend) -> None:
    texts = [f"text {i}" for i in range(10)]
    embed_frame(backend, texts, batch_size=3)
    assert [len(call["input"]) for call in backend.calls] == [3, 3, 3, 1]
    assert backend.sent == texts


def test_embed_frame_batches_count_distinct_texts(backend: FakeBackend) -> None:
    embed_frame(backend, ["a", "b"] * 50, batch_size=2)
    assert len(backend.calls) == 1


def test_embed_frame_passes_model_and_records_it(backend: FakeBackend) -> None:
    frame = embed_frame(backend, ["a"], model="nomic-embed-text")
    assert backend.calls[0]["model"] == "nomic-embed-text"
    assert frame.attrs["model"] == "nomic-embed-text"
    assert embed_frame(backend, ["a"]).attrs["model"] == DEFAULT_EMBED_MODEL


def test_embed_frame_forwards_truncate_only_when_given(backend: FakeBackend) -> None:
    embed_frame(backend, ["a"])
    embed_frame(backend, ["b"], truncate=False)
    assert [call["truncate"] for call in backend.calls] == [None, False]


def test_embed_frame_wide_has_one_float32_column_per_dimension(backend: FakeBackend) -> None:
    texts = pd.Series(["one", "two", "one"], index=["p", "q", "r"])
    wide = embed_frame(backend, texts, wide=True)
    assert list(wide.columns) == ["text"] + [f"e{i}" for i in range(DIMS)]
    assert (wide.drop(columns="text").dtypes == np.float32).all()
    assert wide.index.equals(texts.index)
    narrow_frame = embed_frame(backend, texts)
    np.testing.assert_array_equal(wide.drop(columns="text").to_numpy(), np.stack(narrow_frame["embedding"].to_list()))


@pytest.mark.parametrize("value", [["ok", None], ["ok", ""], pd.Series(["ok", 1.5])])
def test_embed_frame_bad_inputs_fail_before_any_call(backend: FakeBackend, value: Any) -> None:
    with pytest.raises(InvalidRequest):
        embed_frame(backend, value)
    assert backend.calls == []


def test_embed_frame_refuses_a_bad_batch_size(backend: FakeBackend) -> None:
    with pytest.raises(InvalidRequest, match="batch_size"):
        embed_frame(backend, ["a"], batch_size=0)
    assert backend.calls == []


def test_embed_frame_empty_input_gives_an_empty_frame_without_calls(backend: FakeBackend) -> None:
    frame = embed_frame(backend, [])
    assert list(frame.columns) == ["text", "embedding"] and len(frame) == 0
    assert list(embed_frame(backend, [], wide=True).columns) == ["text"]
    assert frame.attrs["model"] == DEFAULT_EMBED_MODEL
    assert backend.calls == []


def test_embed_frame_refuses_a_backend_that_drops_vectors() -> None:
    class Short(FakeBackend):
        def embed(self, model: str = "", input: list[str] | str = "", **kw: Any):
            return ollama.EmbedResponse(embeddings=[fake_vector(t) for t in input][:-1])

    with pytest.raises(OllamaMagicError, match="1 embeddings for 2 texts"):
        embed_frame(Short(), ["a", "b"])


class RecordingBar:
    instances: list[RecordingBar] = []

    def __init__(self, *, total: int, desc: str, disable: bool, **kw: Any) -> None:
        self.total, self.desc, self.disable, self.counted = total, desc, disable, 0
        RecordingBar.instances.append(self)

    def update(self, n: int) -> None:
        self.counted += n

    def __enter__(self) -> RecordingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize("progress, batch_size, shown", [
    (None, 2, True), (None, 64, False), (True, 64, True), (False, 2, False),
])
def test_embed_frame_progress_bar_counts_texts(
    backend: FakeBackend, monkeypatch: pytest.MonkeyPatch, progress: bool | None, batch_size: int, shown: bool
) -> None:
    RecordingBar.instances = []
    monkeypatch.setattr(emb, "tqdm", RecordingBar)
    embed_frame(backend, ["a", "b", "c", "d", "e"], batch_size=batch_size, progress=progress)
    (bar,) = RecordingBar.instances
    assert bar.disable is not shown
    assert bar.desc == "embedding" and bar.total == 5 and bar.counted == 5


# ---- cosine_similarity, nearest, search --------------------------------------------------------


def test_cosine_similarity_on_hand_made_vectors() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[3.0, 3.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    expected = np.array([[math.sqrt(0.5), 1.0, -1.0, 0.0], [math.sqrt(0.5), 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), expected, atol=1e-7)


def test_cosine_similarity_accepts_narrow_and_wide_frames() -> None:
    frame = narrow(["x", "y"], [[1, 0], [0.6, 0.8]])
    expected = np.array([[1.0, 0.6], [0.6, 1.0]])
    np.testing.assert_allclose(cosine_similarity(frame, frame), expected, atol=1e-6)
    np.testing.assert_allclose(cosine_similarity(wide_of(frame), frame), expected, atol=1e-6)


def test_cosine_similarity_refuses_vectors_of_different_lengths() -> None:
    with pytest.raises(InvalidRequest, match="2-dimensional vectors with 3-dimensional"):
        cosine_similarity(np.ones((1, 2)), np.ones((1, 3)))


@pytest.fixture
def corpus() -> pd.DataFrame:
    return narrow(["east", "north-east", "north", "west"],
                  [[1, 0], [0.8, 0.6], [0, 1], [-1, 0]], index=["E", "NE", "N", "W"])


def test_nearest_ranks_corpus_rows_per_query(corpus: pd.DataFrame) -> None:
    queries = narrow(["almost east", "up"], [[0.99, 0.14], [0, 5]], index=["q1", "q2"])
    result = nearest(queries, corpus, k=3)
    assert list(result.columns) == ["query_index", "query", "rank", "index", "text", "score"]
    assert result["query_index"].tolist() == ["q1"] * 3 + ["q2"] * 3
    assert result["query"].tolist() == ["almost east"] * 3 + ["up"] * 3
    assert result["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    assert result["index"].tolist() == ["E", "NE", "N", "N", "NE", "E"]
    assert result["text"].tolist() == ["east", "north-east", "north", "north", "north-east", "east"]
    np.testing.assert_allclose(result["score"].iloc[3:], [1.0, 0.6, 0.0], atol=1e-6)


def test_nearest_same_answer_for_wide_frames(corpus: pd.DataFrame) -> None:
    queries = narrow(["q"], [[0.1, 1.0]])
    expected = nearest(queries, corpus, k=2)
    pd.testing.assert_frame_equal(nearest(wide_of(queries), wide_of(corpus), k=2), expected)


def test_nearest_returns_the_whole_corpus_when_k_is_larger(corpus: pd.DataFrame) -> None:
    result = nearest(narrow(["q"], [[1, 0]]), corpus, k=10)
    assert result["rank"].tolist() == [1, 2, 3, 4]
    assert result["index"].iloc[-1] == "W"


def test_nearest_of_no_queries_is_an_empty_frame(corpus: pd.DataFrame) -> None:
    result = nearest(narrow([], []), corpus)
    assert len(result) == 0 and "score" in result.columns


def test_nearest_refuses_k_below_one(corpus: pd.DataFrame) -> None:
    with pytest.raises(InvalidRequest, match="k must be a positive integer"):
        nearest(corpus, corpus, k=0)


def test_search_embeds_the_query_with_the_corpus_model(backend: FakeBackend) -> None:
    corpus = embed_frame(backend, pd.Series(["alpha", "beta", "gamma"], index=[7, 8, 9]), model="my-embedder")
    result = search(backend, "beta", corpus, k=2)
    assert backend.calls[-1] == {"model": "my-embedder", "input": ["beta"], "truncate": None}
    assert result.index[0] == 8 and result["text"].iloc[0] == "beta"
    assert result["score"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    assert result["score"].is_monotonic_decreasing and len(result) == 2
    assert result["rank"].tolist() == [1, 2]


def test_search_model_argument_wins(backend: FakeBackend) -> None:
    corpus = embed_frame(backend, ["alpha"], model="a")
    search(backend, "alpha", corpus, model="b")
    assert backend.calls[-1]["model"] == "b"


# ---- project_2d, plot_projection ---------------------------------------------------------------


def spread_frame() -> pd.DataFrame:
    """Ten 3-D points: a wide spread along (1, 1, 0), a narrow one along z, none left over."""
    rng = np.random.default_rng(0)
    t = np.linspace(-5, 5, 10)
    z = rng.normal(scale=0.3, size=10)
    vectors = np.column_stack([t, t, z]) + [1.0, 2.0, 3.0]
    return narrow([f"p{i}" for i in range(10)], vectors.tolist(), index=list("abcdefghij"))


def test_project_2d_keeps_index_and_texts() -> None:
    frame = spread_frame()
    projected = project_2d(frame)
    assert list(projected.columns) == ["x", "y", "text"]
    assert projected.shape == (10, 3)
    assert projected.index.equals(frame.index)
    assert projected["text"].tolist() == frame["text"].tolist()


def test_project_2d_axes_are_ordered_by_variance() -> None:
    projected = project_2d(spread_frame())
    assert projected["x"].var() > 10 * projected["y"].var() > 0
    # x follows the wide (1, 1, 0) direction: it is the centred position along it
    t = np.linspace(-5, 5, 10)
    np.testing.assert_allclose(np.abs(projected["x"]), np.abs(t * math.sqrt(2)), atol=0.2)
    first, second = projected.attrs["explained_variance_ratio"]
    assert first > second > 0 and first + second == pytest.approx(1.0)


def test_project_2d_of_wide_frame_matches_narrow() -> None:
    frame = spread_frame()
    pd.testing.assert_frame_equal(project_2d(wide_of(frame)), project_2d(frame), check_exact=False, atol=1e-5)


def test_project_2d_of_one_row_is_the_origin() -> None:
    projected = project_2d(narrow(["only"], [[1, 2, 3]]))
    assert projected[["x", "y"]].to_numpy().tolist() == [[0.0, 0.0]]


def test_plot_projection_without_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(MissingPackage, match="pip install matplotlib"):
        plot_projection(spread_frame())


def test_plot_projection_draws_one_point_per_row() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_projection(spread_frame())
    assert len(ax.collections[0].get_offsets()) == 10
    assert [t.get_text() for t in ax.texts] == [f"p{i}" for i in range(10)]
