"""How a reply reaches a front end: the contract between the engine and the HTTP server.

A generation is an iterator of ``(part, Finished | None, load_ns, total_ns)`` chunks, with a
:class:`~.jobs.Queued` marker first once its job waits on the model. :func:`deliver` hands that to a
front end as a :class:`ChunkStream` (streaming) or as one joined reply, which a server that waits
without a thread (``DEFER_REPLY``) receives as a :class:`Pending`. ``CANCEL_SCOPE`` lets a front end
stop a blocking call from outside. Nothing here knows about models: it is tested without one.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any, Callable, Iterator

from .jobs import Queued
from .logprobs import as_wire
from .reply import ReplyParser

#: Set by a front end around a blocking (non-streaming) call, so it can stop that generation from
#: outside, e.g. when the HTTP client went away. Streaming calls are cancelled through ChunkStream.
CANCEL_SCOPE: ContextVar[threading.Event | None] = ContextVar("ollama_magic_cancel", default=None)


#: Set by a front end that waits for replies without holding a thread (the HTTP server's event loop):
#: a non-streaming generate/chat then returns a :class:`Pending` instead of blocking until it is done.
DEFER_REPLY: ContextVar[bool] = ContextVar("ollama_magic_defer_reply", default=False)


def request_cancel_event() -> threading.Event:
    """The event that stops this request: the front end's (``CANCEL_SCOPE``), else a fresh one."""
    return CANCEL_SCOPE.get() or threading.Event()


class ChunkStream:
    """The iterator a streaming call returns. ``cancel()`` (safe from any thread, even while another
    thread waits in ``next()``) stops decoding after the current token; ``close()`` also ends the
    stream and hands the model back, waiting for a ``next()`` running elsewhere to return first.

    ``start()`` then ``when_ready(callback)`` let a front end wait for a job queued behind others
    without a thread of its own: ``start`` goes as far as queuing the job (loading the model if
    needed), ``when_ready`` calls back once ``next()`` will not wait for the queue."""

    def __init__(self, chunks: Iterator[Any], cancel: threading.Event) -> None:
        self._chunks = chunks
        self._cancel = cancel
        self._lock = threading.RLock()
        self._closed = False
        self._started = False
        self._ahead: list[Any] = []  # an item start() read that was not the Queued marker
        self._queued: Queued | None = None

    def __iter__(self) -> "ChunkStream":
        return self

    def __next__(self) -> Any:
        with self._lock:
            if self._closed:
                raise StopIteration
            self._started = True
            if self._ahead:
                return self._ahead.pop()
            while True:
                item = next(self._chunks)
                if not isinstance(item, Queued):
                    return item
                self._queued = item

    def start(self) -> None:
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            try:
                item = next(self._chunks)
            except StopIteration:
                return
            if isinstance(item, Queued):
                self._queued = item
            else:
                self._ahead.append(item)

    def when_ready(self, callback: Callable[[], None]) -> None:
        queued = self._queued
        if queued is None:
            callback()
        else:
            queued.output.when_ready(callback)

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        self._cancel.set()  # a next() in another thread now returns within a token
        with self._lock:
            if not self._closed:
                self._closed = True
                close = getattr(self._chunks, "close", None)  # a load-only stream is a plain iterator
                if close is not None:
                    close()


class Pending:
    """A non-streaming reply still to come (see ``DEFER_REPLY``): ``start()`` queues its job,
    ``when_ready(callback)`` calls back (from any thread) when ``result()`` will not wait for the
    model's queue, ``result()`` collects it; ``close()`` abandons it (a generation stops, the model
    is handed back). Closing twice, or after ``result()``, does nothing."""

    def __init__(self, collect: Callable[[], Any], when_ready: Callable[[Callable[[], None]], None],
                 close: Callable[[], None], start: Callable[[], None] | None = None) -> None:
        self._collect, self._when_ready, self._close, self._start = collect, when_ready, close, start
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        if self._start is not None:
            self._start()

    def when_ready(self, callback: Callable[[], None]) -> None:
        self._when_ready(callback)

    def result(self) -> Any:
        try:
            return self._collect()
        finally:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._close()


def single(response: Any, stream: bool) -> Any:
    """A reply that is ready at once (a load, an unload, a rendered prompt): as a one-chunk stream
    when the caller streams."""
    return ChunkStream(iter([response]), threading.Event()) if stream else response


def deliver(chunks: Iterator[Any], wrap: Callable[..., Any], stream: bool,
            join: Callable[[list[Any], Any], Any], cancel: threading.Event) -> Any:
    """``chunks`` as the caller asked: each wrapped (``wrap(part, fin, load_ns, total_ns)``) in a
    :class:`ChunkStream`, or joined into one reply (``join(parts, last_wrapped)``), which is a
    :class:`Pending` under ``DEFER_REPLY``. The Queued marker passes through a stream unwrapped."""
    if stream:
        def iterate() -> Iterator[Any]:
            try:
                for chunk in chunks:
                    yield chunk if isinstance(chunk, Queued) else wrap(*chunk)
            finally:
                chunks.close()  # type: ignore[attr-defined]

        return ChunkStream(iterate(), cancel)

    def collect(items: ChunkStream) -> Any:
        parts: list[Any] = []
        last = None
        for piece, fin, load_ns, total_ns in items:
            if piece:
                parts.append(piece)
            if fin is not None:
                last = wrap(None, fin, load_ns, total_ns)
        return join(parts, last)

    items = ChunkStream(chunks, cancel)
    pending = Pending(lambda: collect(items), items.when_ready, items.close, items.start)
    return pending if DEFER_REPLY.get() else pending.result()


def parsed(chunks: Iterator[Any], parser: ReplyParser) -> Iterator[Any]:
    """The runner's text pieces as reply parts; pieces held back by the parsers yield nothing yet
    (unless they carry log probabilities: those go out at once, with whatever text is certain). The
    Queued marker passes through."""
    try:
        for chunk in chunks:
            if isinstance(chunk, Queued):
                yield chunk
                continue
            token, fin, load_ns, total_ns = chunk
            if fin is None:
                part = parser.add(token.text)
                if token.logprobs:
                    part.logprobs = as_wire(token.logprobs)
                if part:
                    yield part, None, load_ns, total_ns
            else:
                yield parser.finish(), fin, load_ns, total_ns
    finally:
        chunks.close()  # type: ignore[attr-defined]


__all__ = ["CANCEL_SCOPE", "DEFER_REPLY", "ChunkStream", "Pending", "deliver", "parsed", "request_cancel_event",
           "single"]
