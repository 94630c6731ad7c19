"""How the server holds its stored-responses file, without a model: opened off the event loop (a
locked file waits up to its busy timeout), tried again after a failure, closed when the app stops."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ollama_magic.engine import Engine
from ollama_magic.server import BackgroundServer, create_app, responses_api
from ollama_magic.store import ModelStore
from ollama_magic.store.responses_store import ResponseStore

STORED = {"id": "resp_kept", "object": "response", "created_at": 1, "status": "completed", "model": "m",
          "output": [], "store": True}


@pytest.fixture
def path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    file = tmp_path / "responses.sqlite"
    monkeypatch.setenv("OLLAMA_MAGIC_RESPONSES", str(file))
    return file


def test_a_locked_file_is_waited_for_off_the_event_loop(tmp_path: Path, path: Path) -> None:
    """Another process writing the file holds its lock: the first use waits for it, other requests not."""
    ResponseStore(path).close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    with BackgroundServer(Engine(ModelStore(tmp_path / "models")), port=0) as srv:
        answers: list[int] = []
        asked = threading.Thread(target=lambda: answers.append(
            httpx.get(srv.url + "/v1/responses/resp_none", timeout=40).status_code))
        asked.start()
        try:
            threading.Event().wait(1.0)  # the first use is now waiting for the lock
            assert httpx.get(srv.url + "/api/version", timeout=3).status_code == 200
        finally:
            writer.execute("ROLLBACK")
            writer.close()
            asked.join(40)
        assert answers == [404]


def test_a_file_that_could_not_be_opened_is_tried_again(tmp_path: Path, path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure turns storing off for a while, not for the server's life (a lock released, a disk freed)."""
    monkeypatch.setattr(responses_api, "REOPEN_AFTER", 0.0, raising=False)
    path.mkdir()  # a directory where the file should be: it cannot be opened
    client = TestClient(create_app(Engine(ModelStore(tmp_path / "models"))))
    assert client.get("/v1/responses/resp_kept").status_code == 404
    shutil.rmtree(path)
    with ResponseStore(path) as store:
        store.put(STORED, [])
    again = client.get("/v1/responses/resp_kept")
    assert again.status_code == 200 and again.json()["id"] == "resp_kept"


def test_the_file_is_closed_when_the_app_stops(tmp_path: Path, path: Path) -> None:
    """SQLite removes the write-ahead log when its last connection closes: after the server stops, none is left."""
    with TestClient(create_app(Engine(ModelStore(tmp_path / "models")))) as client:
        assert client.get("/v1/responses/resp_none").status_code == 404  # the file is opened
        assert path.exists() and Path(f"{path}-wal").exists()
    assert not Path(f"{path}-wal").exists()
