"""Serving the engine's blocking iterators from async routes.

Each stream's ``next()`` calls run in a thread of its own so the event loop stays free. The first item is fetched
before the response starts, so errors that happen early (unknown model, bad option, a model that
will not load, a full queue) still get their own HTTP status; later errors become a final error line.
When the client goes away, the stream is cancelled and decoding stops after the current token; a
non-streaming call is watched the same way (``in_thread(fn, request)``).

A request queued behind others on a busy model holds no thread while it waits: a thread starts the
engine call only as far as queuing its job (``Pending.start`` / ``ChunkStream.start``), the event
loop then waits for the job's first output (``when_ready``, signalled with ``call_soon_threadsafe``),
and only then does a thread collect the reply or relay the stream. Those short calls run in threads
of their own limiter, not anyio's default pool (40 threads), so /api/tags, /api/ps or /api/show
never wait behind inference.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, AsyncIterator, Callable, Iterator

import anyio
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from ..engine.delivery import CANCEL_SCOPE, DEFER_REPLY, ChunkStream, Pending
from ..errors import OllamaMagicError
from .envelopes import native_error

END = object()


def _next(iterator: Iterator[Any]) -> Any:
    try:
        return next(iterator)
    except StopIteration:
        return END


def dumps(obj: Any) -> str:
    """Compact JSON that line-splitting clients cannot cut in two (U+2028/9 and NEL escaped)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")


def to_json(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=True, by_alias=True)
    return obj


def _inference_threads(request: Request) -> anyio.CapacityLimiter:
    """Threads for the short engine calls around an inference: queuing a job (which may wait for
    its model to load) and collecting a finished reply. Requests beyond it wait in the limiter, in
    the event loop, holding no thread; waiting for a model's queue holds none either. One limiter
    per app (so per server and event loop: a stopped server's loop keeps no tokens of the next's)."""
    state = request.app.state
    limiter = getattr(state, "inference_threads", None)
    if limiter is None:
        from ..engine.runner import num_parallel

        limiter = state.inference_threads = anyio.CapacityLimiter(2 * num_parallel() + 8)
    return limiter


async def in_thread(fn: Callable[[], Any], request: Request | None = None) -> Any:
    """Run a blocking engine call in a thread. With ``request``, the call is an inference that may
    wait on a model: a generation it starts waits for its turn without a thread (see the module
    docstring) and is cancelled (within a token) when the client disconnects before the answer, or a
    stream's first piece, is ready."""
    if request is None:
        return await anyio.to_thread.run_sync(fn)
    cancel = threading.Event()

    def call() -> Any:
        scopes = CANCEL_SCOPE.set(cancel), DEFER_REPLY.set(True)
        try:
            result = fn()
            if isinstance(result, (Pending, ChunkStream)):
                result.start()  # the job is queued; the wait for its turn is the event loop's
            return result
        finally:
            DEFER_REPLY.reset(scopes[1])
            CANCEL_SCOPE.reset(scopes[0])

    async def watch_disconnect() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                cancel.set()
                return

    failure: Exception | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch_disconnect)
        try:
            result = await anyio.to_thread.run_sync(call, limiter=_inference_threads(request))
            if isinstance(result, (Pending, ChunkStream)):
                result = await _when_ready(result, _inference_threads(request))
        except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group
            failure = exc  # (raised inside it, it would arrive wrapped in an ExceptionGroup)
        finally:
            tasks.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


async def _when_ready(waiting: Pending | ChunkStream, threads: anyio.CapacityLimiter) -> Any:
    """Wait, holding no thread, until a queued job has output; then a Pending's reply (collected in a
    thread, which no longer waits on the queue) or the stream itself."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def wake() -> None:  # on the model's owner thread
        try:
            loop.call_soon_threadsafe(ready.set)
        except RuntimeError:  # the loop is gone (server shut down): nobody to wake
            pass

    try:
        waiting.when_ready(wake)
        await ready.wait()
        if isinstance(waiting, Pending):
            return await anyio.to_thread.run_sync(waiting.result, limiter=threads)
        return waiting
    except BaseException:
        with anyio.CancelScope(shield=True):  # the job stops and the model is handed back
            await anyio.to_thread.run_sync(waiting.close)
        raise


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Relay:
    """An engine iterator served from async code: one thread pulls and encodes every item (the
    generators may hold thread-bound locks, so they must be driven from one thread; an engine stream
    comes here already queued and ready, see ``in_thread``), the event loop writes what it hands
    over. One thread per stream instead of one thread-pool hop per token: on 2 cores every hop
    takes time from the decode threads (measured with the ollama client, gemma3:270m: 0.91 of
    in-kernel tokens/s with per-token hops, 0.99 with this)."""

    def __init__(self, iterator: Iterator[Any], encode: Callable[[Any], str],
                 encode_error: Callable[[OllamaMagicError], str]) -> None:
        self.iterator, self.encode, self.encode_error = iterator, encode, encode_error
        self.loop = asyncio.get_running_loop()
        self.pieces: asyncio.Queue[Any] = asyncio.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="ollama-magic-stream", daemon=True)
        self.thread.start()

    def _put(self, piece: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.pieces.put_nowait, piece)
        except RuntimeError:  # the loop is gone (server shut down): nobody to deliver to
            self.stop.set()

    def _produce(self) -> None:
        try:
            while not self.stop.is_set():
                item = _next(self.iterator)
                if item is END:
                    break
                self._put(self.encode(item))
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop
            self._put(_Failed(exc))
        self._put(END)

    async def first(self) -> Any:
        """The first piece; an error before it is raised here, before any byte is sent."""
        piece = await self.pieces.get()
        if isinstance(piece, _Failed):
            await self.aclose()
            raise piece.exc
        return piece

    async def body(self, first: Any, closing: Callable[[], str] | None = None) -> AsyncIterator[str]:
        try:
            piece = first
            while piece is not END:
                batch = [piece]
                while not self.pieces.empty() and isinstance(batch[-1], str):
                    batch.append(self.pieces.get_nowait())  # tokens that piled up go out in one write
                text = "".join(p for p in batch if isinstance(p, str))
                if text:
                    yield text
                piece = batch[-1] if not isinstance(batch[-1], str) else await self.pieces.get()
                if isinstance(piece, _Failed):
                    if not isinstance(piece.exc, OllamaMagicError):
                        raise piece.exc
                    yield self.encode_error(piece.exc)  # a late error is the stream's last line
                    break
            if closing is not None:
                yield closing()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        self.stop.set()
        cancel = getattr(self.iterator, "cancel", None)
        if cancel is not None:
            cancel()  # decoding stops after the current token, even while the producer waits in next()
        with anyio.CancelScope(shield=True):  # runs even when the client's disconnect cancelled us
            await anyio.to_thread.run_sync(self.thread.join)
            close = getattr(self.iterator, "close", None)
            if close is not None:
                await anyio.to_thread.run_sync(close)  # hands the model back (keep_alive starts)


async def open_stream(iterator: Iterator[Any], encode: Callable[[Any], str],
                      encode_error: Callable[[OllamaMagicError], str]) -> tuple[Relay, Any]:
    """Start relaying; returns (relay, first piece). Early errors raise here, with their status."""
    relay = Relay(iterator, encode, encode_error)
    return relay, await relay.first()


async def ollama_response(call: Callable[[], Any], stream: bool, request: Request | None = None) -> Response:
    """Run an engine call and answer as Ollama's API does: one JSON object, or (``stream``) NDJSON
    lines flushed one by one; one of our errors becomes Ollama's error body and status. Pass
    ``request`` for inference calls (see ``in_thread``)."""
    try:
        result = await in_thread(call, request)
        if not stream:
            return JSONResponse(to_json(result))
        stream, first = await open_stream(result, lambda item: dumps(to_json(item)) + "\n",
                                          lambda exc: dumps({"error": str(exc)}) + "\n")
    except OllamaMagicError as exc:
        return native_error(exc)
    return StreamingResponse(stream.body(first), media_type="application/x-ndjson")


ndjson = ollama_response  # its old name
