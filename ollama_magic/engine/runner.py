"""One loaded model and the one thread allowed to touch it (the actor; batching is in decoder.py).

llama.cpp contexts are not thread-safe: two threads on one ``Llama`` abort the process (a dead kernel).
So every llama.cpp call for a model runs on that model's owner thread. Callers from any thread (magics,
widgets, HTTP handlers) submit jobs; tokens come back through a queue. A consumer that stops reading
sets a cancel flag, which the owner thread checks after every token.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import llama_cpp

from .. import envconfig
from ..errors import InvalidRequest, ServerBusy
from .decoder import Decoder, split_at_stop
from .embedder import EMBED_PACK_TOKENS, EmbedJob, embed_jobs, tokenize_texts  # noqa: F401 - EMBED_PACK_TOKENS: its old home
from .grammar import JSON_GRAMMAR, check_grammar, schema_grammar  # noqa: F401 - JSON_GRAMMAR, schema_grammar: their old home
from .jobs import EngineError, Finished, GenerationJob, LoadOptions, Token
from .buffer_report import BufferReport, measured
from .llama_context import ContextShape, EmbeddingContext, LlamaContext, load_shape  # noqa: F401 - ContextShape: its old home
from .llama_log import llama_log  # noqa: F401 - its old home
from .machine import physical_cores, return_freed_memory as _return_freed_memory
from .sampling import Sampling
from .vision import Projector

log = logging.getLogger("ollama_magic")
T = TypeVar("T")

__all__ = ["EngineError", "Finished", "GenerationJob", "LoadOptions", "Runner", "Sampling", "Token",
           "physical_cores", "split_at_stop"]


num_parallel = envconfig.num_parallel  # OLLAMA_NUM_PARALLEL, read when called
max_queue = envconfig.max_queue  # OLLAMA_MAX_QUEUE
DEFAULT_NUM_PARALLEL = envconfig.num_parallel.default
DEFAULT_MAX_QUEUE = envconfig.max_queue.default

_STOP = object()
#: how often a caller's wait wakes up: lock waits are not interruptible by Ctrl-C on Windows
#: (bpo-29971), and a dead owner thread is noticed at the next wake-up instead of never
WAIT_SLICE = 0.2


@dataclass
class _Call:
    """A function to run on the owner thread, and the future its caller waits on."""

    fn: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(self.fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self.future.set_exception(exc)


class Runner:
    """The owner-thread actor: loads ``model_path`` on its own thread and runs every later call there.

    Generation models get a :class:`Decoder` and the thread runs its step loop, taking in new jobs
    and side calls (``call``) between steps. Embedding models get an :class:`EmbeddingContext` (the
    same wrapper, loaded the same way) and the thread packs the embed requests queued on it.
    """

    def __init__(self, model_path: Path, load: LoadOptions, name: str = "") -> None:
        self.model_path = model_path
        self.load_options = load
        self.name = name
        self.max_queue = max_queue()
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._waiting = 0  # jobs submitted and not yet taken up (generations in a slot, embeds packed): OLLAMA_MAX_QUEUE
        self._waiting_lock = threading.Lock()
        self.lctx: LlamaContext | None = None  # an EmbeddingContext for embedding models
        self.decoder: Decoder | None = None
        self.embed_decodes = 0  # llama_decode calls made for embeddings since the load (tests watch it)
        self.projector: Any = None  # vision.Projector, for models with an image projector
        #: what llama.cpp allocated for this load, per device (its own buffer report)
        self.allocated = BufferReport()
        #: one line per way the load differs from what was asked (a quantized K/V cache that fell back to f16)
        self.load_notes: list[str] = []
        self._closed = False
        #: set when the owner thread is stuck in llama.cpp for good (see :meth:`abandon`)
        self.abandoned: EngineError | None = None
        self._thread = threading.Thread(target=self._loop, name=f"ollama-magic-runner:{name}", daemon=True)
        self._thread.start()
        start = time.perf_counter_ns()
        try:
            self.call(self._load)
        except BaseException:
            self._stop_thread()  # a failed load ends its thread; the caller gets the one error
            raise
        self.load_duration = time.perf_counter_ns() - start

    # ---- thread plumbing ----------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._serve()
        finally:
            self._fail_inbox()

    def _fail_inbox(self) -> None:
        """The thread is ending: whatever is still queued (put after ``_STOP``) ends with an error."""
        self._fail_items(self._take(block=False))

    def _fail_items(self, items: list[Any], error: EngineError | None = None) -> None:
        """End queued items that will never run (calls, embed and generation jobs) with an error."""
        error = error or EngineError(f"model {self.name} was unloaded")
        for item in items:
            if isinstance(item, _Call) and item.future.set_running_or_notify_cancel():
                item.future.set_exception(error)
            elif isinstance(item, EmbedJob):
                self._left_queue()
                item.future.set_exception(error)
            elif isinstance(item, tuple):
                self._left_queue()
                item[1].put(error)

    def _serve(self) -> None:
        while True:
            decoder = self.decoder
            items = self._take(block=decoder is None or not decoder.busy())
            embeds = [item for item in items if isinstance(item, EmbedJob)]
            for i, item in enumerate(items):
                if item is _STOP:
                    # embed jobs not run yet (they were all run at the first one otherwise) and whatever
                    # came after the stop in this take
                    self._fail_items(embeds + [x for x in items[i + 1:] if not isinstance(x, EmbedJob)])
                    self._free()  # close() freed it already; a load cut short (Ctrl-C) did not
                    return
                if isinstance(item, EmbedJob):
                    if embeds:  # every embed request queued now goes into the same packed batches
                        self._embed_jobs(embeds)
                        embeds = []
                elif isinstance(item, tuple):
                    assert self.decoder is not None
                    self.decoder.submit(*item)
                else:
                    item.run()
            if self.decoder is not None and self.decoder.busy():
                try:
                    self.decoder.step()
                except BaseException as exc:  # noqa: BLE001 - never kill the owner thread
                    log.exception("decoder step failed")
                    self.decoder.fail_all(EngineError(f"model {self.name} failed: {exc}"))

    def _take(self, block: bool) -> list[Any]:
        """Everything in the inbox now (waiting for the first item only when ``block``)."""
        items: list[Any] = []
        try:
            items.append(self._inbox.get(block=block))
            while True:
                items.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        return items

    def _stop_thread(self) -> None:
        self._closed = True
        self._inbox.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the owner thread (between decode steps) and wait for its result."""
        if self._closed:
            raise EngineError(f"model {self.name} was unloaded")
        item = _Call(fn)
        self._inbox.put(item)
        return self._wait(item.future)

    def _wait(self, future: "Future[T]") -> T:
        """``future.result()`` in slices: Ctrl-C lands within one (on every OS), and a caller whose
        job can never run (the owner thread has ended) gets an error instead of waiting forever."""
        while True:
            try:
                return future.result(timeout=WAIT_SLICE)
            except TimeoutError:
                if self.abandoned is not None and not future.done():  # its thread is stuck for good
                    raise self.abandoned from None
                if not self._thread.is_alive() and not future.done():  # nothing will ever run it
                    raise EngineError(f"model {self.name} was unloaded") from None

    def abandon(self, error: EngineError) -> None:
        """The owner thread is stuck in llama.cpp for good (an RPC worker it decodes on died: see
        ``devices.on_rpc_abort``, which parks ggml-rpc's failing thread instead of letting it abort the
        process). End every job waiting on this model with ``error`` from the caller's thread and never
        touch the model again; its memory here stays held (freeing it would wait on the stuck thread)."""
        self.abandoned = error
        self._closed = True
        self._fail_items(self._take(block=False), error)
        decoder = self.decoder
        if decoder is not None:  # only outputs are touched: the stuck thread owns everything else
            for seq in decoder.active():
                seq.out.put(error)
            while decoder.waiting:
                _, out = decoder.waiting.popleft()
                out.put(error)

    def close(self) -> None:
        """Free the model (on its own thread) and stop the thread.

        The scheduler only closes a runner nobody uses; jobs still here (a bug elsewhere) end with an
        error rather than running on a freed context.
        """
        if self._closed:
            return
        try:
            self.call(self._free)
        finally:
            self._stop_thread()
            _return_freed_memory()

    # ---- owner-thread work --------------------------------------------------------------------

    def _free(self) -> None:
        """Free whatever the load created (owner thread); jobs still here end with an error."""
        if self.decoder is not None:
            self.decoder.fail_all(EngineError(f"model {self.name} was unloaded"))
            self.decoder = None
        if self.projector is not None:
            self.projector.close()
            self.projector = None
        if self.lctx is not None:
            self.lctx.close()
            self.lctx = None

    def _load(self) -> None:
        with measured() as self.allocated:  # llama.cpp's own report of what this load allocated, per device
            self._load_context()

    def _load_context(self) -> None:
        opts = self.load_options
        threads = opts.num_thread if opts.num_thread > 0 else physical_cores()
        shape = load_shape(opts, threads)
        if not opts.embedding:
            try:
                self.lctx = LlamaContext(self.model_path, shape, [Path(p) for p in opts.adapters])
            except ValueError as exc:
                raise EngineError(f"failed to load model {self.name}: {exc}") from None
            self.load_notes = list(self.lctx.notes)
            self.vocab = self.lctx.vocab
            if opts.projector:
                try:
                    self.projector = Projector(Path(opts.projector), self.lctx, threads=threads,
                                               use_gpu=opts.projector_offloaded)
                except BaseException:
                    self.lctx.close()
                    self.lctx = None
                    raise
            self.decoder = Decoder(self.lctx, self._left_queue, self.projector)
            return
        pooling = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED  # the GGUF's own
        if self._pooling_from_gguf() is None:  # a cross-encoder ranks; a generative model mean-pools
            pooling = llama_cpp.LLAMA_POOLING_TYPE_RANK if self._is_reranker() else llama_cpp.LLAMA_POOLING_TYPE_MEAN
        try:
            self.lctx = EmbeddingContext(self.model_path, shape, pooling, [Path(p) for p in opts.adapters])
        except ValueError as exc:
            raise EngineError(f"failed to load model {self.name}: {exc}") from None
        self.load_notes = list(self.lctx.notes)
        self.vocab = self.lctx.vocab

    def _pooling_from_gguf(self) -> int | None:
        from ..store.gguf_meta import gguf_header as read_gguf

        return read_gguf(self.model_path).arch_value("pooling_type")

    def _is_reranker(self) -> bool:
        from ..store.gguf_meta import gguf_header

        return gguf_header(self.model_path).is_reranker

    def _enter_queue(self) -> None:
        """Count one more waiting job, or refuse it with Ollama's 503 when OLLAMA_MAX_QUEUE wait already."""
        with self._waiting_lock:
            if self._waiting >= self.max_queue:
                raise ServerBusy()
            self._waiting += 1

    def _left_queue(self) -> None:
        with self._waiting_lock:
            self._waiting -= 1

    @property
    def n_ctx(self) -> int:
        """Tokens one request may hold (num_ctx), not the whole multi-sequence context."""
        return self.load_options.num_ctx

    @property
    def n_vocab(self) -> int:
        """The model's vocabulary size: token ids are 0..n_vocab-1."""
        if self.lctx is None:
            raise EngineError(f"model {self.name} was unloaded")
        return self.lctx.n_vocab

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting(self) -> int:
        """Jobs queued: generations waiting for a free slot, embed requests waiting for the owner thread."""
        return self._waiting

    @property
    def tokens_decoded(self) -> int:
        """Tokens put through llama_decode since the load (generation models)."""
        return self.decoder.tokens_decoded if self.decoder is not None else 0

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Thread-safe in llama.cpp (llama.h says so), so it runs on the caller's thread. The scheduler
        never frees a model while a request holds it, so this cannot race an unload."""
        if self.lctx is None:
            raise EngineError(f"model {self.name} was unloaded")
        return self.lctx.tokenize(text.encode("utf-8"), add_bos=add_bos)

    def detokenize(self, tokens: list[int]) -> str:
        if self.lctx is None:
            raise EngineError(f"model {self.name} was unloaded")
        return self.lctx.detokenize(tokens).decode("utf-8", errors="replace")

    def tokenize_media(self, text: str, images: list[Any], *, add_special: bool) -> Any:
        """A prompt with images as a ``vision.MediaPrompt`` (libmtmd's chunks), on the owner thread."""
        if self.projector is None:
            from .images import NO_VISION

            raise InvalidRequest(NO_VISION)
        return self.call(lambda: self.projector.tokenize(text, images, add_special=add_special))

    def check_grammar(self, gbnf: str) -> None:
        self.call(lambda: check_grammar(self.vocab, gbnf))

    def stream(self, job: GenerationJob) -> Iterator[Token | Finished]:
        """Queue a generation; yield text pieces, then one Finished. Closing the iterator cancels it.

        At most ``OLLAMA_MAX_QUEUE`` jobs wait for a slot; one more is refused with Ollama's 503.
        """
        if self._closed or self.decoder is None:
            raise EngineError(f"model {self.name} was unloaded")
        self._enter_queue()
        self._inbox.put((job, job.output))
        return self._drain(job, job.output)

    def _drain(self, job: GenerationJob, out: "queue.Queue[Any]") -> Iterator[Token | Finished]:
        try:
            while True:
                try:
                    item = out.get(timeout=WAIT_SLICE)  # in slices: see _wait
                except queue.Empty:
                    if not self._thread.is_alive() and out.empty():
                        raise EngineError(f"model {self.name} was unloaded") from None
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            job.cancel.set()

    def embed(self, texts: list[str], truncate: bool, normalize: bool = True) -> tuple[list[list[float]], int]:
        """One vector per text (L2-normalised unless asked not to) and the number of tokens read."""
        return self._wait(self.submit_embed(texts, truncate, normalize))

    def submit_embed(self, texts: list[str], truncate: bool,
                     normalize: bool = True) -> "Future[tuple[list[list[float]], int]]":
        """Queue an embed request; its future holds what :meth:`embed` returns.

        Texts are tokenized here, on the caller's thread (llama.cpp's tokenizer is thread-safe); the
        owner thread then packs the texts of every embed request queued at that moment into the same
        micro-batches (see ``_embed_jobs``), so concurrent requests share llama_decode calls.
        """
        token_lists = tokenize_texts(self.embedding_context(), texts, truncate)
        return self.submit_embed_tokens(token_lists, texts, normalize)

    def embed_tokens(self, token_lists: list[list[int]], texts: list[str], normalize: bool = True,
                     alone: bool = False, cancel: threading.Event | None = None) -> tuple[list[list[float]], int]:
        """:meth:`embed` for texts tokenized by the caller (see :meth:`submit_embed_tokens`)."""
        return self._wait(self.submit_embed_tokens(token_lists, texts, normalize, alone, cancel))

    def submit_embed_tokens(self, token_lists: list[list[int]], texts: list[str], normalize: bool = True,
                            alone: bool = False,
                            cancel: threading.Event | None = None) -> "Future[tuple[list[list[float]], int]]":
        """As :meth:`submit_embed`, for texts tokenized by the caller (a reranker's query-document pairs,
        ``rerank.pair_tokens``), each one that fits one decode of ``embedding_context()``; ``alone``:
        each in a decode of its own (``EmbedJob.alone``); ``cancel`` set, the texts not yet decoded are
        not (the future then holds an EngineError)."""
        if self._closed:
            raise EngineError(f"model {self.name} was unloaded")
        self._enter_queue()
        job = EmbedJob(texts, token_lists, normalize, alone=alone, cancel=cancel)
        self._inbox.put(job)
        return job.future

    def embedding_context(self) -> EmbeddingContext:
        """The loaded embedding context (its vocabulary and sizes: tokenizing is thread-safe)."""
        ectx = self.lctx
        if not isinstance(ectx, EmbeddingContext):
            raise InvalidRequest(f'"{self.name}" does not support embeddings in this context')
        return ectx

    def _embed_jobs(self, jobs: list[EmbedJob]) -> None:
        """Owner thread: embed the texts of ``jobs`` together (see embedder.py)."""
        for _ in jobs:
            self._left_queue()
        ectx = self.lctx
        if not isinstance(ectx, EmbeddingContext):
            for job in jobs:
                job.future.set_exception(EngineError(f"model {self.name} was unloaded"))
            return
        self.embed_decodes += embed_jobs(ectx, jobs)


