"""The streaming layer between the engine's iterators and HTTP: early errors keep their status, late
ones become a final ``{"error": ...}`` line, and a stream that ends early is cancelled."""

from __future__ import annotations

import json
import threading
from typing import Iterator

from fastapi import FastAPI
from fastapi.testclient import TestClient

from ollama_magic.errors import InvalidRequest, ModelNotFound
from ollama_magic.server.streaming import dumps, ndjson


class Stream:
    """An engine-like stream: some items, then maybe an error; records whether it was cancelled."""

    def __init__(self, items: list[dict], error: Exception | None = None, early: bool = False) -> None:
        self.items, self.error, self.early = items, error, early
        self.cancelled = threading.Event()
        self._items = self._run()

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> dict:
        return next(self._items)

    def _run(self) -> Iterator[dict]:
        if self.early and self.error:
            raise self.error
        yield from self.items
        if self.error:
            raise self.error

    def cancel(self) -> None:
        self.cancelled.set()


def serve(stream: Stream, streaming: bool = True) -> TestClient:
    app = FastAPI()

    @app.post("/x")
    async def route():  # noqa: ANN202
        return await ndjson(lambda: iter(stream) if streaming else {"whole": True}, streaming)

    return TestClient(app)


def test_items_become_ndjson_lines_and_the_stream_is_closed() -> None:
    stream = Stream([{"n": 1}, {"n": 2, "done": True}])
    resp = serve(stream).post("/x")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in resp.text.splitlines()] == [{"n": 1}, {"n": 2, "done": True}]
    assert stream.cancelled.is_set()  # cancel() after the end is harmless and always called


def test_an_error_before_the_first_item_keeps_its_status() -> None:
    resp = serve(Stream([], ModelNotFound("nope"), early=True)).post("/x")
    assert resp.status_code == 404 and resp.json() == {"error": 'model "nope" not found'}


def test_an_error_mid_stream_is_the_last_line() -> None:
    resp = serve(Stream([{"n": 1}, {"n": 2}], InvalidRequest("the model broke"))).post("/x")
    assert resp.status_code == 200
    assert [json.loads(line) for line in resp.text.splitlines()] == [{"n": 1}, {"n": 2}, {"error": "the model broke"}]


def test_non_streaming_answers_one_object() -> None:
    resp = serve(Stream([]), streaming=False).post("/x")
    assert resp.json() == {"whole": True}


def test_dumps_escapes_what_line_splitters_would_cut() -> None:
    text = dumps({"response": "a\u2028b\u2029c\x85d\ne"})
    assert len(text.splitlines()) == 1 and json.loads(text) == {"response": "a\u2028b\u2029c\x85d\ne"}
