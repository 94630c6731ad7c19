"""The column cache's store, without a model: keys, float32 round trips, LRU eviction under the size
limit, clearing one model, and two processes writing one file at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ollama_magic.store.column_cache import ROW_OVERHEAD, ColumnCache, chat_key, default_path, embed_key, model_identity

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarize: a"}]


def test_a_key_changes_with_everything_that_changes_the_answer_and_nothing_else() -> None:
    base = chat_key("digest:sha256:1", MESSAGES, {"temperature": 0, "seed": 1}, None)
    assert base == chat_key("digest:sha256:1", MESSAGES, {"seed": 1, "temperature": 0.0}, None)  # 0 == 0.0, any order
    assert base == chat_key("digest:sha256:1", MESSAGES, {"temperature": 0, "seed": 1, "num_thread": 8}, None)
    changed = [
        chat_key("digest:sha256:2", MESSAGES, {"temperature": 0, "seed": 1}),
        chat_key("digest:sha256:1", MESSAGES[1:], {"temperature": 0, "seed": 1}),
        chat_key("digest:sha256:1", [MESSAGES[0], {"role": "user", "content": "Summarize: b"}],
                 {"temperature": 0, "seed": 1}),
        chat_key("digest:sha256:1", MESSAGES, {"temperature": 0, "seed": 2}),
        chat_key("digest:sha256:1", MESSAGES, {"temperature": 0, "seed": 1, "num_predict": 5}),
        chat_key("digest:sha256:1", MESSAGES, {"temperature": 0, "seed": 1}, "json"),
        chat_key("digest:sha256:1", MESSAGES, {"temperature": 0, "seed": 1}, {"type": "object"}),
    ]
    assert len({base, *changed}) == len(changed) + 1
    assert embed_key("m", "a") != embed_key("m", "a", truncate=False) != embed_key("m", "a", dimensions=8)
    assert embed_key("m", "a") != chat_key("m", [{"role": "user", "content": "a"}])


def test_the_model_is_its_digest_where_listed_else_the_servers_url_else_not_cached() -> None:
    listing = SimpleNamespace(models=[SimpleNamespace(model="gemma3:270m", digest="abc")])
    engine_like = SimpleNamespace(list=lambda: listing)
    assert model_identity(engine_like, "gemma3:270m") == "digest:abc"
    openai_like = SimpleNamespace(host="http://h:8080/v1", list=lambda: SimpleNamespace(
        models=[SimpleNamespace(model="qwen", digest=None)]))
    assert model_identity(openai_like, "qwen") == "url:http://h:8080/v1|qwen"
    assert model_identity(SimpleNamespace(chat=lambda: None), "gemma3:270m") is None


def test_text_and_float32_vectors_round_trip_exactly(tmp_path: Path) -> None:
    with ColumnCache(tmp_path / "c.sqlite") as cache:
        cache.put("k1", "m", "héllo ✓")
        vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
        cache.put_vectors("e", {"v1": vector})
        assert cache.get("k1") == "héllo ✓" and cache.get("missing") is None
        [got] = cache.get_vectors(["v1", "k1"]).values()  # a text key is not a vector
        assert got.dtype == np.float32 and np.array_equal(got, vector)
        stored = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT value, dim FROM entries WHERE key='v1'").fetchone()
        assert stored == (vector.tobytes(), 384)  # raw float32 bytes, not JSON


def test_the_least_recently_used_entries_go_when_the_limit_is_passed(tmp_path: Path) -> None:
    value = "x" * 1000
    entry = len("k00") + len(value) + ROW_OVERHEAD
    with ColumnCache(tmp_path / "c.sqlite", max_bytes=10 * entry) as cache:
        for i in range(10):
            cache.put(f"k{i:02d}", "m", value)
            time.sleep(0.002)
        assert cache.total_bytes() == 10 * entry
        cache.get("k00")  # used again: now the most recent
        cache.put("k10", "m", value)
        assert cache.total_bytes() <= 10 * entry
        kept = set(cache.get_many(f"k{i:02d}" for i in range(11)))
        assert {"k00", "k10"} <= kept and "k01" not in kept and len(kept) == 9  # down to 90% of the limit
        assert cache.total_bytes() == 9 * entry


def test_clear_forgets_one_model_or_all_with_their_counters(tmp_path: Path) -> None:
    with ColumnCache(tmp_path / "c.sqlite") as cache:
        cache.put("a", "one", "1")
        cache.put("b", "two", "2")
        cache.count("one", hits=3, misses=1)
        cache.count("two", misses=1)
        stats = cache.stats().set_index("model")
        assert stats.loc["one", "hits"] == 3 and stats.loc["one", "entries"] == 1 and stats.loc["two", "misses"] == 1
        assert cache.clear("one") == 1
        assert cache.get("a") is None and cache.get("b") == "2"
        assert list(cache.stats().model) == ["two"]
        assert cache.clear() == 1 and cache.stats().empty and cache.total_bytes() == 0


def test_counters_persist_across_opens(tmp_path: Path) -> None:
    with ColumnCache(tmp_path / "c.sqlite") as cache:
        cache.count("m", hits=2, misses=5)
    with ColumnCache(tmp_path / "c.sqlite") as cache:
        cache.count("m", hits=1)
        assert cache.stats().set_index("model").loc["m", ["hits", "misses"]].tolist() == [3, 5]


def _writer(path: str, who: int, rows: int) -> None:
    with ColumnCache(path) as cache:
        for i in range(rows):
            cache.put(f"{who}-{i}", f"model{who}", f"answer {who} {i}")
            cache.count(f"model{who}", misses=1)


def test_two_processes_write_one_cache_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, who, 300)) for who in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    with ColumnCache(path) as cache:
        got = cache.get_many([f"{who}-{i}" for who in (1, 2) for i in range(300)])
        assert len(got) == 600 and got["2-299"] == "answer 2 299"
        assert cache.stats().set_index("model").misses.to_dict() == {"model1": 300, "model2": 300}


def test_the_file_lives_under_the_data_dir_unless_ollama_magic_cache_says(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_MAGIC_CACHE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg" / "ollama-magic" / "column-cache.sqlite"
    monkeypatch.setenv("OLLAMA_MAGIC_CACHE", str(tmp_path / "elsewhere.sqlite"))
    assert default_path() == tmp_path / "elsewhere.sqlite"


def test_the_cli_shows_and_clears_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from ollama_magic.cli import main

    monkeypatch.setenv("OLLAMA_MAGIC_CACHE", str(tmp_path / "c.sqlite"))
    with ColumnCache() as cache:
        cache.put("a", "gemma3:270m", "1")
        cache.count("gemma3:270m", hits=4, misses=1)
    assert main(["--models", str(tmp_path / "m"), "cache"]) == 0
    out = capsys.readouterr().out
    assert "gemma3:270m" in out and "HITS" in out and str(tmp_path / "c.sqlite") in out
    assert main(["--models", str(tmp_path / "m"), "cache", "clear", "gemma3:270m"]) == 0
    assert "removed 1 cached entries of gemma3:270m" in capsys.readouterr().out
