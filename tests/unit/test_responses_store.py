"""The stored responses' file, without a model: round trip, the count and age bounds (oldest first, on a
controllable clock), surviving a reopen (a restart), several threads and two stores on one file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ollama_magic.store.responses_store import ResponseStore, default_path, open_store


def _response(n: int | str) -> dict:
    return {"id": f"resp_{n}", "object": "response", "status": "completed", "model": "m",
            "output": [{"id": f"msg_{n}", "type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": f"answer {n}"}]}]}


ITEMS = [{"id": "msg_in", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi é"}]}]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_response_round_trips_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResponseStore(path) as store:
        store.put(_response(1), ITEMS)
        assert store.get("resp_1").response == _response(1) and store.get("resp_1").input_items == ITEMS
        assert store.get("resp_2") is None
    with ResponseStore(path) as again:  # a new process on the same file
        assert again.get("resp_1").response["output"][0]["content"][0]["text"] == "answer 1"
        assert again.delete("resp_1") and not again.delete("resp_1")
        assert again.get("resp_1") is None and len(again) == 0


def test_past_the_count_bound_the_oldest_go(tmp_path: Path) -> None:
    clock = Clock()
    with ResponseStore(tmp_path / "r.sqlite", max_count=3, max_age=None, clock=clock) as store:
        for n in range(5):
            clock.now += 1
            store.put(_response(n), ITEMS)
        assert len(store) == 3
        assert [n for n in range(5) if store.get(f"resp_{n}")] == [2, 3, 4]


def test_past_the_age_bound_a_response_is_gone_even_before_a_write_evicts_it(tmp_path: Path) -> None:
    clock = Clock()
    with ResponseStore(tmp_path / "r.sqlite", max_count=100, max_age=60.0, clock=clock) as store:
        store.put(_response("old"), ITEMS)
        clock.now += 30
        store.put(_response("young"), ITEMS)
        clock.now += 31  # old: 61 s, young: 31 s
        assert store.get("resp_old") is None and not store.delete("resp_old")
        assert store.get("resp_young") is not None and len(store) == 1
        store.put(_response("new"), ITEMS)  # the write evicts the expired row from the file itself
        store.max_age = None
        assert store.get("resp_old") is None and store.get("resp_young") is not None


def test_the_bounds_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MAGIC_RESPONSES_MAX", "7")
    monkeypatch.setenv("OLLAMA_MAGIC_RESPONSES_MAX_AGE", "1h30m")
    with ResponseStore(tmp_path / "r.sqlite") as store:
        assert store.max_count == 7 and store.max_age == 5400.0
    monkeypatch.setenv("OLLAMA_MAGIC_RESPONSES_MAX_AGE", "-1")
    with ResponseStore(tmp_path / "r.sqlite") as store:
        assert store.max_age is None  # negative: forever, as OLLAMA_KEEP_ALIVE
    monkeypatch.delenv("OLLAMA_MAGIC_RESPONSES_MAX")
    monkeypatch.delenv("OLLAMA_MAGIC_RESPONSES_MAX_AGE")
    with ResponseStore(tmp_path / "r.sqlite") as store:
        assert store.max_count == 10000 and store.max_age == 30 * 86400


def test_the_file_is_the_environments_else_under_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MAGIC_RESPONSES", str(tmp_path / "mine.sqlite"))
    assert default_path() == tmp_path / "mine.sqlite"
    monkeypatch.delenv("OLLAMA_MAGIC_RESPONSES")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg" / "ollama-magic" / "responses.sqlite"


def test_a_file_that_cannot_be_opened_turns_storing_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    assert open_store(tmp_path / "dir.sqlite") is None
    assert "responses are not stored" in caplog.text


def test_threads_and_two_stores_on_one_file_lose_no_write(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    stores = [ResponseStore(path, max_count=10_000), ResponseStore(path, max_count=10_000)]

    unseen: list[str] = []

    def write(k: int) -> None:
        for n in range(50):
            stores[k % 2].put(_response(f"{k}_{n}"), ITEMS)
            if stores[(k + 1) % 2].get(f"resp_{k}_{n}") is None:  # the other connection must see it
                unseen.append(f"{k}_{n}")

    threads = [threading.Thread(target=write, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not unseen and len(stores[0]) == len(stores[1]) == 300
    for store in stores:
        store.close()


def test_a_failed_open_is_retried_later_not_cached_for_the_servers_life(tmp_path: Path) -> None:
    """A server whose data disk was not there at its first request stores again once it is, after
    ``retry_after`` seconds (not on every request: each failed open may wait on the file's lock)."""
    import sqlite3

    from ollama_magic.store.responses_store import ResponseStoreOpener

    blocker = tmp_path / "data"
    blocker.write_text("a file where the directory goes")
    clock = Clock()
    opener = ResponseStoreOpener(blocker / "r.sqlite", retry_after=60, clock=clock)
    assert opener.get() is None
    blocker.unlink()
    clock.now += 59
    assert opener.get() is None  # not tried again yet
    clock.now += 1
    store = opener.get()
    assert store is not None and opener.get() is store
    store.put(_response(1), ITEMS)
    opener.close()  # on the server's shutdown
    with pytest.raises(sqlite3.ProgrammingError):
        store.get("resp_1")
    assert opener.get() is None  # closed for good: a request racing the shutdown opens nothing
    with ResponseStore(blocker / "r.sqlite") as again:
        assert again.get("resp_1") is not None
