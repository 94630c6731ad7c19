"""One loaded model and the one thread allowed to touch it.

llama.cpp contexts are not thread-safe: two threads on one ``Llama`` abort the process (a dead kernel).
So every llama.cpp call for a model runs on that model's owner thread. Callers from any thread (magics,
widgets, HTTP handlers) submit jobs; tokens come back through a queue. A consumer that stops reading
sets a cancel flag, which the owner thread checks after every token.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import queue
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import llama_cpp
import numpy as np
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from ..errors import EngineError, InvalidRequest

log = logging.getLogger("ollama_magic")
llama_log = logging.getLogger("ollama_magic.llama_cpp")
T = TypeVar("T")


@llama_cpp.llama_log_callback
def _route_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """llama.cpp's own chatter goes to logging, not into notebook cells.

    ggml levels: 1 debug, 2 info, 3 warn, 4 error. llama.cpp's warnings are notices about its own
    choices (e.g. the full-size SWA cache), so they are logged at INFO; errors stay errors.
    """
    message = text.decode("utf-8", errors="replace").rstrip()
    if message:
        llama_log.log({4: logging.ERROR, 3: logging.INFO}.get(level, logging.DEBUG), message)


llama_cpp.llama_log_set(_route_llama_log, ctypes.c_void_p(0))


@dataclass(frozen=True)
class LoadOptions:
    """The options that need a fresh context when they change (Ollama's ``api.Runner``)."""

    num_ctx: int
    num_batch: int
    num_gpu: int
    num_thread: int
    use_mmap: bool
    embedding: bool = False


@dataclass
class Sampling:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1


@dataclass
class GenerationJob:
    tokens: list[int]
    sampling: Sampling
    stop: list[str]
    num_predict: int
    num_keep: int = 4
    grammar: str | None = None
    #: False for non-streaming calls: text is handed over once at the end, so the caller's thread is
    #: not woken for every token (each wake-up competes with llama.cpp's threads for the cores)
    stream: bool = True
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class Token:
    text: str


@dataclass
class Finished:
    done_reason: str
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    context: list[int]


def physical_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class Runner:
    """Loads ``model_path`` on its own thread and runs every later call there."""

    def __init__(self, model_path: Path, load: LoadOptions, name: str = "") -> None:
        self.model_path = model_path
        self.load_options = load
        self.name = name
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"ollama-magic-runner:{name}", daemon=True)
        self.llm: llama_cpp.Llama | None = None
        self._closed = False
        self._thread.start()
        start = time.perf_counter_ns()
        self.call(lambda: self._load())
        self.load_duration = time.perf_counter_ns() - start

    # ---- thread plumbing ----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the owner thread and wait for its result (exceptions re-raised here)."""
        if self._closed:
            raise EngineError(f"model {self.name} was unloaded")
        future: Future[T] = Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                future.set_exception(exc)

        self._jobs.put(job)
        return future.result()

    def close(self) -> None:
        """Free the model (on its own thread) and stop the thread."""
        if self._closed:
            return

        def free() -> None:
            if self.llm is not None:
                self.llm.close()
                self.llm = None

        try:
            self.call(free)
        finally:
            self._closed = True
            self._jobs.put(None)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout=30)
            _return_freed_memory()

    # ---- owner-thread work --------------------------------------------------------------------

    def _load(self) -> None:
        opts = self.load_options
        threads = opts.num_thread if opts.num_thread > 0 else physical_cores()
        kwargs: dict[str, Any] = dict(
            model_path=str(self.model_path),
            n_ctx=opts.num_ctx,
            n_batch=opts.num_batch,
            n_ubatch=opts.num_batch,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=opts.num_gpu,
            use_mmap=opts.use_mmap,
            verbose=False,
        )
        if opts.embedding:
            # Flash attention: measured 1.6x more texts/s on all-MiniLM (2 CPU threads), same vectors.
            kwargs.update(embedding=True, flash_attn=True)
            if self._pooling_from_gguf() is None:
                kwargs["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN  # generative model: mean-pool
        try:
            self.llm = llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"failed to load model {self.name}: {exc}") from None
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._piece_buffer = ctypes.create_string_buffer(256)

    def _pooling_from_gguf(self) -> int | None:
        from ..store.gguf_meta import gguf_header as read_gguf

        return read_gguf(self.model_path).arch_value("pooling_type")

    @property
    def n_ctx(self) -> int:
        assert self.llm is not None
        return self.llm.n_ctx()

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """Thread-safe in llama.cpp (llama.h says so), so it runs on the caller's thread."""
        assert self.llm is not None
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, tokens: list[int]) -> str:
        assert self.llm is not None
        return self.llm.detokenize(tokens).decode("utf-8", errors="replace")

    def _piece(self, token: int) -> bytes:
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece_buffer, len(self._piece_buffer), 0, False)
        if n < 0:
            self._piece_buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece_buffer, -n, 0, False)
        return self._piece_buffer.raw[:n]

    def check_grammar(self, gbnf: str) -> None:
        """An invalid grammar segfaults llama.cpp at sampling time; try it once on its own first."""

        def check() -> None:
            sampler = llama_cpp.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")
            if not sampler:
                raise InvalidRequest("the format schema could not be turned into a grammar")
            llama_cpp.llama_sampler_free(sampler)

        self.call(check)

    def stream(self, job: GenerationJob) -> Iterator[Token | Finished]:
        """Queue a generation; yield text pieces, then one Finished. Closing the iterator cancels it."""
        out: queue.Queue[Token | Finished | BaseException] = queue.Queue()

        def run() -> None:
            try:
                self._generate(job, out)
            except BaseException as exc:  # noqa: BLE001 - delivered to the consumer
                out.put(exc)

        if self._closed:
            raise EngineError(f"model {self.name} was unloaded")
        self._jobs.put(run)
        try:
            while True:
                item = out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            job.cancel.set()

    def _generate(self, job: GenerationJob, out: queue.Queue[Any]) -> None:
        llm = self.llm
        assert llm is not None
        if job.cancel.is_set():
            return
        n_ctx = llm.n_ctx()
        tokens = list(job.tokens)
        if len(tokens) >= n_ctx:
            keep = max(0, min(job.num_keep, n_ctx // 2))
            log.warning("prompt of %d tokens exceeds num_ctx %d; truncating its middle", len(tokens), n_ctx)
            tokens = tokens[:keep] + tokens[len(tokens) - (n_ctx - 1 - keep) :]
        s = job.sampling
        if s.seed >= 0:
            # Reusing a cached prefix changes how the prompt is batched, and llama.cpp's float results
            # depend on batching: same seed, different text. A seeded request is evaluated from scratch
            # so it gives the same text every time, across unload/reload. Unseeded ones reuse the cache.
            llm.reset()
        llm.set_seed(s.seed if s.seed >= 0 else random.getrandbits(32))
        llm.last_n_tokens_size = n_ctx if s.repeat_last_n < 0 else s.repeat_last_n
        grammar = LlamaGrammar.from_string(job.grammar, verbose=False) if job.grammar else None
        limit = job.num_predict
        if limit < 0:
            limit = n_ctx  # -1 and -2: until the context is full
        stops = [x for x in job.stop if x]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        held: list[str] = []
        emit_text: Callable[[str], None] = (lambda t: out.put(Token(t))) if job.stream else held.append
        generated: list[int] = []
        done_reason = "stop"
        start = time.perf_counter_ns()
        first = start
        for token in llm.generate(
            tokens, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p, typical_p=s.typical_p, temp=s.temperature,
            repeat_penalty=s.repeat_penalty, frequency_penalty=s.frequency_penalty,
            presence_penalty=s.presence_penalty, grammar=grammar,
        ):
            if not generated:
                first = time.perf_counter_ns()
            if job.cancel.is_set():
                done_reason = "stop"
                break
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                break
            generated.append(token)
            pending += decoder.decode(self._piece(token))
            emit, pending, hit = _split_at_stop(pending, stops)
            if emit:
                emit_text(emit)
            if hit:
                break
            if len(generated) >= limit or len(tokens) + len(generated) >= n_ctx:
                done_reason = "length"
                break
        pending += decoder.decode(b"", final=True)
        if pending and not job.cancel.is_set():
            emit, _, _ = _split_at_stop(pending, stops, final=True)
            if emit:
                emit_text(emit)
        end = time.perf_counter_ns()
        if held:
            out.put(Token("".join(held)))
        if not generated:
            first = end
        out.put(
            Finished(
                done_reason=done_reason,
                prompt_eval_count=len(tokens),
                prompt_eval_duration=max(1, first - start),
                eval_count=len(generated),
                eval_duration=max(1, end - first),
                context=tokens + generated,
            )
        )

    def embed(self, texts: list[str], truncate: bool, normalize: bool = True) -> tuple[list[list[float]], int]:
        """One vector per text (L2-normalised unless asked not to) and the number of tokens read."""

        def run() -> tuple[list[list[float]], int]:
            llm = self.llm
            assert llm is not None
            limit = min(llm.n_ctx(), llm.n_batch)  # a sequence must fit one decode
            token_lists = []
            for text in texts:
                tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
                if len(tokens) > limit:
                    if not truncate:
                        raise InvalidRequest("the input length exceeds the context length")
                    tokens = tokens[:limit]
                token_lists.append(tokens)
            if llm.pooling_type() in (llama_cpp.LLAMA_POOLING_TYPE_NONE, llama_cpp.LLAMA_POOLING_TYPE_RANK):
                vectors = llm.embed(texts, normalize=normalize, truncate=True)
                return [list(map(float, v)) for v in vectors], sum(map(len, token_lists))
            matrix = _embed_packed(llm, token_lists)
            if normalize:
                norms = np.linalg.norm(matrix, axis=1, keepdims=True)
                matrix = matrix / np.where(norms > 0, norms, 1.0)
            return matrix.tolist(), sum(map(len, token_lists))

        return self.call(run)


#: Tokens per llama_decode when embedding. Sequences in one micro-batch attend over all of it
#: (masked), so cost grows with its square: on all-MiniLM (2 CPU threads) packing 512 tokens
#: without flash attention gave 116 texts/s; with flash attention, packs of 64-256 tokens all gave
#: 310-330 texts/s (within noise). A text longer than the pack goes alone.
EMBED_PACK_TOKENS = 256


def _embed_packed(llm: llama_cpp.Llama, token_lists: list[list[int]]) -> "np.ndarray":
    """Pooled vectors for many texts: shortest first, several sequences per decode.

    ``Llama.embed`` packs up to n_batch tokens (512) per decode and truncates inputs to n_batch;
    here the pack is smaller (faster, see above) while n_batch stays at n_ctx, so any single text
    that fits the context is embedded whole.
    """
    n_embd = llm.n_embd()
    out = np.zeros((len(token_lists), n_embd), dtype=np.float32)
    n_seq_max = llm.context_params.n_seq_max
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    batch: list[int] = []
    used = 0

    def decode() -> None:
        llm._ctx.kv_cache_clear()
        llm._ctx.decode(llm._batch)
        llm._batch.reset()
        for seq, index in enumerate(batch):
            pointer = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, seq)
            out[index] = np.ctypeslib.as_array(pointer, shape=(n_embd,))

    llm._batch.reset()
    for index in order:
        tokens = token_lists[index]
        if batch and (used + len(tokens) > EMBED_PACK_TOKENS or len(batch) >= n_seq_max):
            decode()
            batch, used = [], 0
        llm._batch.add_sequence(tokens, len(batch), True)  # every token an output, as llama.cpp requires
        batch.append(index)
        used += len(tokens)
    if batch:
        decode()
    llm._ctx.kv_cache_clear()
    llm.reset()
    return out


def _return_freed_memory() -> None:
    """Give freed heap back to the OS after an unload.

    Each runner thread gets its own glibc malloc arena; without a trim, the few hundred MB a model
    used stay mapped in the process after it is freed (measured: RSS wandering +80..+190 MB over 40
    load/unload cycles, flat with the trim).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _split_at_stop(text: str, stops: list[str], final: bool = False) -> tuple[str, str, bool]:
    """-> (text safe to emit, text held back, whether a stop string was hit).

    Text that could still grow into a stop string is held back, so a stop string never reaches the
    caller, not even in pieces.
    """
    if not stops:
        return text, "", False
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut >= 0:
        return text[:cut], "", True
    if final:
        return text, "", False
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return text[: len(text) - hold], text[len(text) - hold :], False


JSON_GRAMMAR = JSON_GBNF


def schema_grammar(schema: dict[str, Any]) -> str:
    """A JSON schema as GBNF (llama.cpp's converter); bad schemas become a clear 400, not a crash."""
    import json

    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds
        raise InvalidRequest(f"invalid format schema: {exc}") from None
