"""The delivery contract between the engine and its front ends (``engine/delivery.py``), without a model:
what a streaming caller, a blocking caller and the HTTP server's event loop each get."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest

from ollama_magic.engine.delivery import DEFER_REPLY, ChunkStream, Pending, deliver, parsed
from ollama_magic.engine.jobs import Finished, JobOutput, Queued, Token
from ollama_magic.engine.reply import ReplyParser


class Source:
    """A generator of chunks that records whether it was closed (the engine hands the model back then)."""

    def __init__(self, items: list[Any], gate: threading.Event | None = None) -> None:
        self.items, self.gate, self.closed = items, gate, False

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.items:
                if self.gate is not None and not isinstance(item, Queued):
                    self.gate.wait(5)
                yield item
        finally:
            self.closed = True


def test_close_waits_for_a_next_in_another_thread_then_ends_the_stream() -> None:
    gate, cancel = threading.Event(), threading.Event()
    source = Source(["a", "b"], gate)
    stream = ChunkStream(iter(source), cancel)
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(next(stream)))
    reader.start()
    time.sleep(0.05)  # the reader now waits inside next()
    closer = threading.Thread(target=stream.close)
    closer.start()
    time.sleep(0.05)
    assert cancel.is_set()  # the decoder is told at once, before close gets the lock
    assert closer.is_alive()  # close waits for the running next() to return
    gate.set()
    reader.join(5)
    closer.join(5)
    assert got == ["a"] and source.closed
    with pytest.raises(StopIteration):
        next(stream)
    stream.close()  # a second close does nothing


def test_start_queues_then_when_ready_calls_back_once_output_arrives() -> None:
    output = JobOutput()
    stream = ChunkStream(iter([Queued(output), "first", "second"]), threading.Event())
    stream.start()
    called: list[str] = []
    stream.when_ready(lambda: called.append("ready"))
    assert called == []  # the job still waits on its model
    output.put("anything")
    assert called == ["ready"]
    assert list(stream) == ["first", "second"]  # the Queued marker never reaches the caller


def test_start_keeps_an_item_that_is_not_the_queued_marker() -> None:
    stream = ChunkStream(iter(["only"]), threading.Event())
    stream.start()
    called: list[str] = []
    stream.when_ready(lambda: called.append("ready"))  # nothing queued: ready now
    assert called == ["ready"]
    assert list(stream) == ["only"]


def test_pending_closes_once_however_often_it_is_closed() -> None:
    closes: list[int] = []
    pending = Pending(lambda: "reply", lambda callback: callback(), lambda: closes.append(1))
    assert pending.result() == "reply"
    pending.close()
    pending.close()
    assert closes == [1]


def _wrap(part: Any, fin: Any, load_ns: int, total_ns: int) -> str:
    return f"{part}|{'done' if fin else ''}"


FIN = Finished(done_reason="stop", prompt_eval_count=1, prompt_eval_duration=1, eval_count=2, eval_duration=1, context=[])


def test_deliver_streams_wrapped_chunks_and_passes_queued_through() -> None:
    output = JobOutput()
    source = Source([Queued(output), ("a", None, 0, 0), ("b", FIN, 0, 5)])
    stream = deliver(iter(source), _wrap, True, lambda parts, last: None, threading.Event())
    stream.start()
    assert [*stream] == ["a|", "b|done"] and source.closed


def test_deliver_joins_a_blocking_reply_and_defers_it_for_the_event_loop() -> None:
    def chunks() -> Iterator[Any]:
        return iter(Source([("a", None, 0, 0), ("b", None, 0, 0), (None, FIN, 0, 5)]))

    def join(parts: list[str], last: str) -> str:
        return "".join(parts) + " " + last

    assert deliver(chunks(), _wrap, False, join, threading.Event()) == "ab None|done"
    token = DEFER_REPLY.set(True)
    try:
        pending = deliver(chunks(), _wrap, False, join, threading.Event())
    finally:
        DEFER_REPLY.reset(token)
    assert isinstance(pending, Pending)
    pending.start()
    assert pending.result() == "ab None|done"


def test_parsed_turns_tokens_into_reply_parts_and_passes_queued_through() -> None:
    marker = Queued(JobOutput())
    source = Source([marker, (Token("Hel"), None, 0, 0), (Token("lo"), None, 0, 0), (None, FIN, 1, 2)])
    out = list(parsed(iter(source), ReplyParser()))
    assert out[0] is marker
    text = "".join(part.content for part, *_ in out[1:])
    assert text == "Hello" and out[-1][1] is FIN and source.closed
