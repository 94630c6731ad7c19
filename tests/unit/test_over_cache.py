"""``chat_over`` and ``embed_frame`` with the column cache, on a scripted backend (no model): cached
rows are not asked, the progress bar says how many came from the cache, and a backend that cannot name
its model is not cached."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ollama_magic.notebook.embeddings import embed_frame
from ollama_magic.notebook.over import chat_over


class Stream:
    def __init__(self, text: str) -> None:
        self.text = text

    def __iter__(self):  # noqa: ANN204
        yield SimpleNamespace(message=SimpleNamespace(content=self.text), done=True)

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


class Scripted:
    """Answers each prompt with its upper case; lists one model with a digest."""

    def __init__(self, digest: str | None = "sha256:abc") -> None:
        self.asked: list[str] = []
        self.embedded: list[str] = []
        self.digest = digest

    def list(self) -> Any:
        return SimpleNamespace(models=[SimpleNamespace(model="m:latest", digest=self.digest)])

    def chat(self, model: str, messages: list[dict], **kwargs: Any) -> Stream:
        self.asked.append(messages[-1]["content"])
        return Stream(messages[-1]["content"].upper())

    def embed(self, model: str, input: list[str], **kwargs: Any) -> Any:
        self.embedded.extend(input)
        return SimpleNamespace(embeddings=[[float(len(t)), 0.5, -1.25] for t in input])


@pytest.fixture(autouse=True)
def cache_file(tmp_path, monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("OLLAMA_MAGIC_CACHE", str(tmp_path / "cache.sqlite"))


def test_cached_rows_are_not_asked_and_the_bar_counts_them(capsys: pytest.CaptureFixture[str]) -> None:
    backend = Scripted()
    first = chat_over(["a", "b"], "say {text}", model="m", backend=backend, options={"temperature": 0},
                      progress=False)
    assert sorted(backend.asked) == ["say a", "say b"]
    backend.asked.clear()
    again = chat_over(["a", "b", "c"], "say {text}", model="m", backend=backend, options={"temperature": 0.0})
    assert backend.asked == ["say c"] and list(again) == ["SAY A", "SAY B", "SAY C"]
    assert list(again[:2]) == list(first)
    meta = again.attrs["ollama_magic"]
    assert (meta["cached"], meta["asked"], meta["distinct"]) == (2, 1, 3)
    bar = capsys.readouterr().err
    assert "cached=2" in bar and "asked=1" in bar and "row/s" in bar and "3/3" in bar


def test_refresh_asks_again_and_no_cache_leaves_nothing_behind() -> None:
    backend = Scripted()
    chat_over(["a"], "say {text}", model="m", backend=backend, progress=False, cache=False)
    chat_over(["a"], "say {text}", model="m", backend=backend, progress=False)  # asked: --no-cache wrote nothing
    chat_over(["a"], "say {text}", model="m", backend=backend, progress=False, refresh=True)
    chat_over(["a"], "say {text}", model="m", backend=backend, progress=False)  # from the cache
    assert backend.asked == ["say a"] * 3


def test_a_backend_that_cannot_name_its_model_is_not_cached() -> None:
    class Wrapper:  # no list, no host: nothing says which weights answer
        def __init__(self) -> None:
            self.inner = Scripted()

        def chat(self, *args: Any, **kwargs: Any) -> Stream:
            return self.inner.chat(*args, **kwargs)

    backend = Wrapper()
    for _ in range(2):
        result = chat_over(["a"], "say {text}", model="m", backend=backend, progress=False)
    assert backend.inner.asked == ["say a", "say a"] and result.attrs["ollama_magic"]["cached"] == 0


def test_a_server_without_digests_is_keyed_by_its_url_and_model() -> None:
    backend = Scripted(digest=None)
    backend.host = "http://one:8000/v1"
    chat_over(["a"], "say {text}", model="m", backend=backend, progress=False)
    chat_over(["a"], "say {text}", model="m", backend=backend, progress=False)
    backend.host = "http://two:8000/v1"
    chat_over(["a"], "say {text}", model="m", backend=backend, progress=False)
    assert backend.asked == ["say a", "say a"]


def test_embed_frame_embeds_only_new_texts_and_returns_float32() -> None:
    backend = Scripted()
    first = embed_frame(backend, ["x", "yy", "x"], model="m")
    again = embed_frame(backend, ["yy", "x", "zzz"], model="m")
    assert backend.embedded == ["x", "yy", "zzz"]
    assert again.attrs["ollama_magic"] == {"model": "m", "distinct": 3, "cached": 2, "asked": 1}
    assert np.array_equal(again.embedding[1], first.embedding[0]) and again.embedding[2].dtype == np.float32
    assert again.embedding[2].tolist() == [3.0, 0.5, -1.25]
