"""``Engine``: Ollama's API as a Python object, served in-process on llama.cpp.

The method names, arguments and result types are those of the official ``ollama.Client``, so code
written for ``ollama.Client()`` runs unchanged against ``Engine()``. Every front end (magics,
widgets, the HTTP server) calls these methods; none of them talks to llama.cpp directly.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import ollama

from ..defaults import INSTALL_HINT, embedded_model, register_with_progress
from ..errors import InvalidRequest, RegistryError
from ..formatting import now_rfc3339
from ..names import ModelName
from ..options import OPTION_DEFAULTS, check_options
from ..registry import pull_model, push_model
from ..store import ModelRecord, ModelStore
from ..store import manifests as mt
from ..types import (ChatMessage, ChatResponse, ContextFit, CreateRequest, DebugInfo, DetokenizeResponse,
                     GenerateResponse, ListResponse, ProgressResponse, RunningModel, RunningModels, ShowResponse,
                     TokenizeResponse)
from .capabilities import capabilities, model_template
from .context_window import ContextWindow, FittedChat, fit_chat, fit_prompt, kept_at_start
from .gpu import gpu_offload_supported, offloaded_layers, total_layers
from .images import NO_VISION, Picture, image_bytes, tag_content
from .images import pictures as decode_pictures
from .jobs import Queued
from .logprobs import as_wire, check_top_logprobs
from .prompt import GoPrompt, PromptTemplate
from .reply import ReplyParser, ReplyPart, join_parts
from .runner import (JSON_GRAMMAR, Finished, GenerationJob, LoadOptions, Runner, Sampling, Token, num_parallel,
                     schema_grammar)
from .scheduler import Loaded, Scheduler, parse_keep_alive
from .thinking import check_think, think_enabled
from .toolcalls import forced_call_grammar, resolve_tool_choice

log = logging.getLogger("ollama_magic")

#: Set by a front end around a blocking (non-streaming) call, so it can stop that generation from
#: outside, e.g. when the HTTP client went away. Streaming calls are cancelled through ChunkStream.
CANCEL_SCOPE: ContextVar[threading.Event | None] = ContextVar("ollama_magic_cancel", default=None)


#: Set by a front end that waits for replies without holding a thread (the HTTP server's event loop):
#: a non-streaming generate/chat then returns a :class:`Pending` instead of blocking until it is done.
DEFER_REPLY: ContextVar[bool] = ContextVar("ollama_magic_defer_reply", default=False)


def request_cancel_event() -> threading.Event:
    return CANCEL_SCOPE.get() or threading.Event()


def _as_dict(value: Any) -> dict[str, Any]:
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True, by_alias=True)
    if isinstance(value, Mapping):
        return dict(value)
    raise InvalidRequest(f"expected an object, got {type(value).__name__}")


def _tool_dict(tool: Any) -> dict[str, Any]:
    if callable(tool) and not hasattr(tool, "model_dump"):
        from ollama._utils import convert_function_to_tool

        tool = convert_function_to_tool(tool)
    return _as_dict(tool)


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


class Engine:
    """The in-kernel engine: a model store plus a scheduler of loaded llama.cpp models."""

    def __init__(self, store: ModelStore | None = None, *, max_loaded: int | None = None) -> None:
        self.store = store or ModelStore()
        self.scheduler = Scheduler(max_loaded)
        self._templates: dict[tuple[str, str | None], PromptTemplate] = {}

    def close(self) -> None:
        """Unload every model and stop the keep-alive thread."""
        self.scheduler.shutdown()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- model management (the store) --------------------------------------------------------

    def list(self) -> ListResponse:
        return self.store.list()

    def show(self, model: str, *, verbose: bool = False) -> ShowResponse:
        record = self.store.resolve(model)
        resp = self.store.show_record(record, verbose=verbose)
        resp.capabilities = capabilities(record, self._template(record, None))
        return resp

    def copy(self, source: str, destination: str) -> ollama.StatusResponse:
        self.store.copy(source, destination)
        return ollama.StatusResponse(status="success")

    def delete(self, model: str) -> ollama.StatusResponse:
        record = self.store.resolve(model, register_defaults=False)
        self.scheduler.unload(record.name.short)
        self.store.delete(model)
        return ollama.StatusResponse(status="success")

    def create(
        self,
        model: str,
        quantize: str | None = None,
        from_: str | None = None,
        files: dict[str, str] | None = None,
        adapters: dict[str, str] | None = None,
        template: str | None = None,
        license: str | list[str] | None = None,
        system: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        messages: Sequence[Any] | None = None,
        *,
        stream: bool = False,
        modelfile: str | None = None,
        local_paths: bool = True,
        base_dir: str | os.PathLike[str] | None = None,
        on_bytes: Callable[[int, int | None], None] | None = None,
    ) -> ProgressResponse | Iterator[ProgressResponse]:
        """Create a model. ``from_`` and a Modelfile's FROM may name a local GGUF file or safetensors
        directory only with ``local_paths`` (the in-kernel side); the HTTP server passes False.
        Relative paths are read from ``base_dir`` (default: the current directory); ``on_bytes`` is
        told (bytes just written, total) while files are imported, for progress bars."""
        request = CreateRequest(
            model=model, quantize=quantize, from_=from_, files=files, adapters=adapters, template=template,
            license=license, system=system, parameters=dict(parameters) if parameters else None,
            messages=[_as_dict(m) for m in messages] if messages else None, modelfile=modelfile,
        )
        base = (base_dir or os.getcwd()) if local_paths else None
        statuses = self.store.create(model, request, trusted=local_paths, base_dir=base, on_bytes=on_bytes)
        return statuses if stream else _last(statuses)

    def pull(self, model: str, *, insecure: bool = False, stream: bool = False,
             auth: tuple[str, str] | None = None) -> ProgressResponse | Iterator[ProgressResponse]:
        """Get a model, with Ollama's progress messages (the last one, unless ``stream``).

        The one pull policy of every front end: an embedded default model (``gemma3:270m``,
        ``all-minilm``) whose package is installed is registered from it, or reported installed;
        anything else comes from its registry (registry.ollama.ai, hf.co, or the host in the name;
        ``insecure`` for plain http), blobs already in the store skipped. ``auth`` is
        ``(user, password)`` for registries that ask (default: ``$OLLAMA_MAGIC_REGISTRY_AUTH``)."""
        statuses = self._pull(model, insecure, auth)
        return statuses if stream else _last(statuses)

    def _pull(self, model: str, insecure: bool, auth: tuple[str, str] | None) -> Iterator[ProgressResponse]:
        embedded = embedded_model(model)
        if embedded is not None and importlib.util.find_spec(embedded.package) is not None:
            yield from register_with_progress(self.store, embedded.name)
            return
        try:
            yield from pull_model(self.store, model, insecure=insecure, auth=auth)
        except RegistryError as exc:
            if embedded is None:
                raise
            raise RegistryError(f"{exc}; or install its package: {INSTALL_HINT}") from None

    def push(self, model: str, *, insecure: bool = False, stream: bool = False,
             auth: tuple[str, str] | None = None) -> ProgressResponse | Iterator[ProgressResponse]:
        """Push an installed model to the registry its name names (``host/namespace/model:tag``;
        copy it to such a name first), with Ollama's progress messages."""
        statuses = push_model(self.store, model, insecure=insecure, auth=auth)
        return statuses if stream else _last(statuses)

    def create_blob(self, path: str | os.PathLike[str]) -> str:
        """Copy a local file into the blob store; its digest (``sha256:...``), as ``ollama.Client`` returns."""
        self.store.blobs.directory.mkdir(parents=True, exist_ok=True)
        return self.store.blobs.import_file(Path(path))

    # ---- what is loaded ----------------------------------------------------------------------

    def ps(self) -> RunningModels:
        """What is loaded (an ``ollama.ProcessResponse``), with each model's GPU layers and whether
        this llama.cpp build can offload at all."""
        entries = sorted(self.scheduler.loaded(), key=lambda e: e.expires_at or datetime.max.replace(tzinfo=timezone.utc), reverse=True)
        far = datetime(2318, 1, 1, tzinfo=timezone.utc)
        return RunningModels(
            models=[
                RunningModel(
                    name=e.name, model=e.name, digest=e.digest, expires_at=e.expires_at or far,
                    size=e.size, size_vram=e.size_vram, details=e.details, context_length=e.context_length,
                    gpu_layers=e.gpu_layers, layers=e.layers,
                )
                for e in entries
            ],
            gpu_offload=gpu_offload_supported(),
        )

    def load(self, model: str, keep_alive: float | str | None = None) -> ollama.GenerateResponse:
        """Load a model now (Ollama: a generate request with an empty prompt)."""
        return self.generate(model, keep_alive=keep_alive)  # type: ignore[return-value]

    def unload(self, model: str) -> bool:
        """Unload a model now; False if it was not loaded. An embedded default that is not installed
        is not registered just to say so (that would convert MiniLM): it is not found."""
        return self.scheduler.unload(self.store.resolve(model, register_defaults=False).name.short)

    # ---- inference ---------------------------------------------------------------------------

    def generate(
        self,
        model: str = "",
        prompt: str | None = None,
        suffix: str | None = None,
        *,
        system: str | None = None,
        template: str | None = None,
        context: Sequence[int] | None = None,
        stream: bool = False,
        think: bool | str | None = None,
        raw: bool | None = None,
        format: str | Mapping[str, Any] | None = None,
        images: Sequence[Any] | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        debug_render_only: bool = False,
        truncate: bool | None = None,
        shift: bool | None = None,
        **_: Any,
    ) -> GenerateResponse | Iterator[GenerateResponse]:
        """``debug_render_only`` (Ollama's ``_debug_render_only``) returns the prompt without running it.
        ``logprobs``: each chunk carries its tokens' log probabilities (``top_logprobs``: with that many
        likeliest alternatives, 0..20); the whole reply carries them all. ``truncate`` and ``shift``
        (default true) are Ollama's: see ``context_window``."""
        top = check_top_logprobs(top_logprobs)
        record = self._record(model)
        keep = parse_keep_alive(keep_alive)
        opts = self._options(record, options)
        if not prompt and not suffix and not context and not debug_render_only:
            return self._load_only(record, model, keep, opts, stream, lambda **kw: GenerateResponse(**kw))
        pics = self._pictures(record, list(images or []))
        self._require(record, "completion", "generate")
        if suffix:
            self._require(record, "insert", "generate")  # Ollama checks the model's own template too
        tmpl = self._template(record, template)
        think = self._think(model, tmpl, think, None) if not raw else check_think(think)
        prompt = tag_content(prompt or "", len(pics)) if pics else prompt
        if raw:
            text = prompt or ""
        else:
            text = tmpl.render_generate(prompt or "", system if system is not None else (record.system or ""),
                                        suffix or "", think=think)
        if debug_render_only:
            debug = DebugInfo(rendered_template=text, image_count=len(pics) or None)
            return self._rendered(GenerateResponse(model=model, created_at=now_rfc3339(), response="", done=False,
                                                   debug_info=debug), stream)
        trace = _trace(tmpl, text, think if not raw else False)
        parser = ReplyParser(thinking=trace[0], started_thinking=trace[1], tool_tag=tmpl.tool_tag)
        cancel = request_cancel_event()
        earlier = list(context) if context else None

        def prompt(runner: Runner) -> Any:
            n_vocab = runner.n_vocab
            if earlier and not all(0 <= t < n_vocab for t in earlier):
                raise InvalidRequest(f"context holds token ids outside the model's vocabulary (0..{n_vocab - 1})")
            if pics:  # nothing is left out of a prompt with images: it fits, or it is refused
                return self._media(runner, text, pics, earlier)
            tokens = (earlier or []) + runner.tokenize(text, add_bos=not earlier)
            return fit_prompt(tokens, _window(runner.n_ctx, opts, truncate), _bos(runner))

        chunks = self._run(record, prompt, opts, keep, format, stream=stream, cancel=cancel, shift=shift,
                           logprobs=(bool(logprobs), top), trace=trace)

        def wrap(part: ReplyPart | None, fin: Finished | None, load_ns: int, total_ns: int) -> GenerateResponse:
            part = part or ReplyPart()
            fields = dict(model=model, created_at=now_rfc3339(), response=part.content, thinking=part.thinking or None,
                          logprobs=part.logprobs or None)
            if fin is None:
                return GenerateResponse(**fields, done=False)
            return GenerateResponse(**fields, done=True, done_reason=fin.done_reason, context=fin.context,
                                    **_stats(fin, load_ns, total_ns))

        def join(parts: list[ReplyPart], last: GenerateResponse) -> GenerateResponse:
            whole = join_parts(parts)
            return last.model_copy(update={"response": whole.content, "thinking": whole.thinking or None,
                                           "logprobs": whole.logprobs or None})

        return self._deliver(_parsed(chunks, parser), wrap, stream, join, cancel)

    def chat(
        self,
        model: str = "",
        messages: Sequence[Any] | None = None,
        *,
        tools: Sequence[Any] | None = None,
        stream: bool = False,
        think: bool | str | None = None,
        format: str | Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        debug_render_only: bool = False,
        truncate: bool | None = None,
        shift: bool | None = None,
        **_: Any,
    ) -> ChatResponse | Iterator[ChatResponse]:
        """Beyond ``ollama.Client.chat``: ``tool_choice`` (OpenAI's "none", "required" or a named function,
        forced with a grammar) and ``debug_render_only`` (the prompt, not run; its ``debug_info.context_fit``
        says what fitting the context left out). ``logprobs`` and ``top_logprobs`` as in :meth:`generate`.
        With ``format`` a thinking model thinks freely and only its answer is constrained (Ollama's
        two-phase structured outputs). ``truncate`` (default true) leaves out the oldest turns that do not
        fit, ``shift`` (default true) shifts the context when the reply fills it, as Ollama's: see
        ``context_window``. The final chunk's ``dropped_messages`` counts the turns' messages left out."""
        top = check_top_logprobs(top_logprobs)
        record = self._record(model)
        keep = parse_keep_alive(keep_alive)
        opts = self._options(record, options)
        msgs = _with_tool_names([self._message(m) for m in (messages or [])])
        if not msgs and not debug_render_only:
            return self._load_only(
                record, model, keep, opts, stream,
                lambda **kw: ChatResponse(message=ChatMessage(role="assistant", content=""), **kw),
            )
        self._require(record, "completion", "chat")
        pics = self._pictures(record, [image for m in msgs for image in (m.get("images") or [])])
        if pics:
            for m in msgs:
                if m.get("images"):
                    m["content"] = tag_content(m["content"], len(m["images"]))
        tool_dicts = [_tool_dict(t) for t in tools] if tools else None
        mode, forced = resolve_tool_choice(tool_choice, tool_dicts)
        if mode == "none":
            tool_dicts = None
        if record.system and not any(m["role"] == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": record.system})
        msgs = [*record.messages, *msgs]
        tmpl = self._template(record, None)
        if tool_dicts:
            self._require(record, "tools", "chat")
        grammar = None
        if mode == "required":
            if format:
                raise InvalidRequest("format cannot be combined with a forced tool_choice")
            grammar = forced_call_grammar(forced, tmpl.tool_tag)
        think = self._think(model, tmpl, think, grammar)

        def render(kept: list[dict[str, Any]]) -> str:
            return tmpl.render_chat(kept, tool_dicts, think=think)

        text = render(msgs)
        if debug_render_only:
            if pics:  # as when it runs: a chat with images is not fitted (it fits, or it is refused)
                num_ctx = self._load_options(record, opts, embedding=False).num_ctx
                fitted, fit = FittedChat(msgs, text, 0), ContextFit(num_ctx=num_ctx)
            else:
                fitted, fit = self._fit_without_running(record, opts, msgs, render, text, truncate, keep)
            message = ChatMessage(role="assistant", content="")
            info = DebugInfo(rendered_template=fitted.text, context_fit=fit, image_count=len(pics) or None)
            return self._rendered(ChatResponse(model=model, created_at=now_rfc3339(), message=message, done=False,
                                               debug_info=info), stream)
        trace = _trace(tmpl, text, think)
        parser = ReplyParser(thinking=trace[0], started_thinking=trace[1], tools=tool_dicts, tool_tag=tmpl.tool_tag)
        cancel = request_cancel_event()
        dropped = [0]

        def prompt(runner: Runner) -> Any:
            if pics:  # nothing is left out of a chat with images: it fits, or it is refused
                return self._media(runner, text, pics, None)
            window = _window(runner.n_ctx, opts, truncate)
            fitted = fit_chat(msgs, render, runner.tokenize, window, text)
            dropped[0] = fitted.dropped
            tokens = fitted.tokens if fitted.tokens is not None else runner.tokenize(fitted.text)
            return fit_prompt(tokens, window, _bos(runner))

        chunks = self._run(record, prompt, opts, keep, format, stream=stream, cancel=cancel, grammar=grammar,
                           shift=shift, logprobs=(bool(logprobs), top), trace=trace)

        def wrap(part: ReplyPart | None, fin: Finished | None, load_ns: int, total_ns: int) -> ChatResponse:
            part = part or ReplyPart()
            message = _chat_message(part)
            lps = part.logprobs or None
            if fin is None:
                return ChatResponse(model=model, created_at=now_rfc3339(), message=message, done=False, logprobs=lps)
            return ChatResponse(
                model=model, created_at=now_rfc3339(), message=message, done=True, done_reason=fin.done_reason,
                logprobs=lps, dropped_messages=dropped[0] or None, **_stats(fin, load_ns, total_ns),
            )

        def join(parts: list[ReplyPart], last: ChatResponse) -> ChatResponse:
            whole = join_parts(parts)
            return last.model_copy(update={"message": _chat_message(whole), "logprobs": whole.logprobs or None})

        return self._deliver(_parsed(chunks, parser), wrap, stream, join, cancel)

    def fit_context(self, model: str, messages: Sequence[Any], *, tools: Sequence[Any] | None = None,
                    think: bool | str | None = None, options: Mapping[str, Any] | None = None,
                    format: str | Mapping[str, Any] | None = None) -> ContextFit:
        """What ``chat`` with these arguments would leave out to fit the context, counted with the
        model's tokenizer by the very rule ``chat`` uses, without generating (the notebook's context
        guard). The model is loaded only when the prompt is long enough to need counting."""
        rendered = self.chat(model, messages, tools=tools, think=think, options=options, format=format,
                             debug_render_only=True)
        assert rendered.debug_info is not None and rendered.debug_info.context_fit is not None
        return rendered.debug_info.context_fit

    def tokenize(self, model: str, content: str, *, options: Mapping[str, Any] | None = None,
                 keep_alive: float | str | None = None) -> TokenizeResponse:
        """The model's tokens for ``content`` (special tokens such as ``<start_of_turn>`` read as one
        token, no BOS added), so a notebook can budget a context. Loads the model if needed."""
        record = self._record(model)
        embedding = record.gguf_info().is_embedding_model
        entry, _ = self._acquire(record, self._options(record, options), embedding=embedding)
        try:
            tokens = entry.runner.tokenize(content, add_bos=False) if content else []
        finally:
            self.scheduler.release(entry, parse_keep_alive(keep_alive))
        return TokenizeResponse(model=model, tokens=tokens)

    def detokenize(self, model: str, tokens: Sequence[int], *, options: Mapping[str, Any] | None = None,
                   keep_alive: float | str | None = None) -> DetokenizeResponse:
        """The text of ``tokens``; ids outside the vocabulary are a 400."""
        record = self._record(model)
        embedding = record.gguf_info().is_embedding_model
        entry, _ = self._acquire(record, self._options(record, options), embedding=embedding)
        try:
            n_vocab = entry.runner.n_vocab
            bad = [t for t in tokens if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < n_vocab]
            if bad:
                raise InvalidRequest(f"invalid token {bad[0]!r}: this model's token ids are 0 to {n_vocab - 1}")
            content = entry.runner.detokenize(list(tokens)) if tokens else ""
        finally:
            self.scheduler.release(entry, parse_keep_alive(keep_alive))
        return DetokenizeResponse(model=model, content=content)

    def embed(
        self,
        model: str = "",
        input: str | Sequence[str] = "",
        truncate: bool | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        dimensions: int | None = None,
    ) -> ollama.EmbedResponse:
        start = time.perf_counter_ns()
        record = self._record(model)
        keep = parse_keep_alive(keep_alive)
        texts = [input] if isinstance(input, str) else list(input)
        if any(not isinstance(t, str) for t in texts):
            raise InvalidRequest("invalid input type: input must be a string or a list of strings")
        texts = [t for t in texts if t != ""] if isinstance(input, str) else texts
        if dimensions is not None and dimensions < 0:
            raise InvalidRequest("dimensions must be a positive number")
        opts = self._options(record, options)
        entry, load_ns = self._acquire(record, opts, embedding=True)
        try:  # queued on the model's owner thread, packed with the other embed requests waiting there
            future = entry.runner.submit_embed(texts, truncate is not False) if texts else None
        except BaseException:
            self.scheduler.release(entry, keep)
            raise

        def when_ready(callback: Callable[[], None]) -> None:
            if future is None:
                callback()
            else:
                future.add_done_callback(lambda _done: callback())

        def collect() -> ollama.EmbedResponse:
            vectors, count = future.result() if future is not None else ([], 0)
            if dimensions:
                vectors = [_normalize(v[:dimensions]) for v in vectors]
            return ollama.EmbedResponse(
                model=model, embeddings=vectors, total_duration=time.perf_counter_ns() - start,
                load_duration=load_ns, prompt_eval_count=count,
            )

        pending = Pending(collect, when_ready, lambda: self.scheduler.release(entry, keep))
        return pending if DEFER_REPLY.get() else pending.result()

    def embeddings(
        self,
        model: str = "",
        prompt: str | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
    ) -> ollama.EmbeddingsResponse:
        """The legacy endpoint: one vector, not normalised (as Ollama's /api/embeddings)."""
        record = self._record(model)
        keep = parse_keep_alive(keep_alive)
        entry, _ = self._acquire(record, self._options(record, options), embedding=True)
        try:
            if not prompt:
                return ollama.EmbeddingsResponse(embedding=[])
            vectors, _ = entry.runner.embed([prompt], True, normalize=False)
        finally:
            self.scheduler.release(entry, keep)
        return ollama.EmbeddingsResponse(embedding=vectors[0])

    # ---- internals ---------------------------------------------------------------------------

    def _record(self, model: str) -> ModelRecord:
        if not model:
            raise InvalidRequest("model is required")
        ModelName.parse(model)
        return self.store.resolve(model)

    def _require(self, record: ModelRecord, capability: str, verb: str) -> None:
        """Refuse a request needing a capability the model lacks, by the rule ``show`` lists them with."""
        if capability in capabilities(record, self._template(record, None)):
            return
        if capability == "completion":
            raise InvalidRequest(f'"{record.name.short}" does not support {verb}: it is an embedding model')
        n = record.name
        raise InvalidRequest(f"{n.host}/{n.namespace}/{n.model}:{n.tag} does not support {capability}")

    def _pictures(self, record: ModelRecord, images: list[Any]) -> list[Picture]:
        """A request's images, decoded; refused (400) unless the model can see, in Ollama's order:
        unreadable base64 first, then a model without vision, then too many or non-images."""
        if not images:
            return []
        encoded = [image_bytes(image) for image in images]
        if "vision" not in capabilities(record, self._template(record, None)):
            raise InvalidRequest(NO_VISION)
        if not record.manifest.layers_of(mt.PROJECTOR):
            raise InvalidRequest(f"{NO_VISION}: {record.name.short}'s vision weights are inside its model GGUF "
                                 "(Ollama's own engine format), which llama.cpp cannot load; a model with a "
                                 "projector layer (an mmproj GGUF) is needed")
        return decode_pictures(encoded)

    def _message(self, message: Any) -> dict[str, Any]:
        m = _as_dict(message)
        role = m.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise InvalidRequest(f"invalid message role {role!r}: use system, user, assistant or tool")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise InvalidRequest("message content must be a string")
        m["content"] = content or ""
        return m

    @staticmethod
    def _think(model: str, tmpl: PromptTemplate, think: Any, constrained: Any) -> bool | str | None:
        """Ollama's rule: a model that can think thinks unless told not to; asking one that cannot is a
        400. Under a forced tool call's grammar the trace is left out; under ``format`` it is not (the
        decoder applies that grammar after the trace: ``thinking.GrammarGate``)."""
        think = check_think(think)
        if all(tmpl.thinking_tags):
            if constrained:
                return False
            return True if think is None else think
        if think_enabled(think):
            raise InvalidRequest(f'"{model}" does not support thinking')
        return think

    def _fit_without_running(self, record: ModelRecord, opts: Mapping[str, Any], msgs: list[dict[str, Any]],
                             render: Callable[[list[dict[str, Any]]], str], text: str, truncate: bool | None,
                             keep: float | None) -> tuple[FittedChat, ContextFit]:
        """The chat's fitting for a render-only request: the model is loaded (for its tokenizer) only if
        the prompt may not fit, as Ollama loads it for every ``_debug_render_only``."""
        window = _window(self._load_options(record, opts, embedding=False).num_ctx, opts, truncate)
        entry: Loaded | None = None

        def tokenize(prompt: str) -> list[int]:
            nonlocal entry
            if entry is None:
                entry, _ = self._acquire(record, opts, embedding=False)
            return entry.runner.tokenize(prompt)

        try:
            fitted = fit_chat(msgs, render, tokenize, window, text)
            tokens = fitted.tokens
            if tokens is None and entry is not None:
                tokens = tokenize(fitted.text)
        finally:
            if entry is not None:
                self.scheduler.release(entry, keep)
        fit = ContextFit(num_ctx=window.num_ctx, dropped_messages=fitted.dropped,
                         prompt_tokens=len(tokens) if tokens is not None else None)
        return fitted, fit

    @staticmethod
    def _rendered(response: Any, stream: bool) -> Any:
        return ChunkStream(iter([response]), threading.Event()) if stream else response

    def _template(self, record: ModelRecord, override: str | None) -> PromptTemplate:
        key = (record.manifest_digest, override)
        if key not in self._templates:
            if override:
                self._templates[key] = GoPrompt(override)
            else:
                self._templates[key] = model_template(record)
        return self._templates[key]

    def _options(self, record: ModelRecord, request: Mapping[str, Any] | None) -> dict[str, Any]:
        if request is not None and hasattr(request, "model_dump"):
            request = request.model_dump(exclude_none=True)  # ollama.Options
        merged = dict(OPTION_DEFAULTS)
        if os.environ.get("OLLAMA_CONTEXT_LENGTH"):
            merged["num_ctx"] = int(os.environ["OLLAMA_CONTEXT_LENGTH"])
        merged.update(check_options(record.parameters, strict=False))
        merged.update(check_options(request, strict=False))
        return merged

    def _load_options(self, record: ModelRecord, opts: Mapping[str, Any], embedding: bool) -> LoadOptions:
        info = record.gguf_info()
        trained = info.context_length or opts["num_ctx"]
        num_ctx = max(4, min(int(opts["num_ctx"]), trained))  # Ollama caps at the trained context, and at 4
        num_gpu = opts.get("num_gpu", -1)
        if not gpu_offload_supported():
            num_gpu = 0
        num_batch = num_ctx if embedding else max(1, min(opts["num_batch"], num_ctx))
        projectors = [] if embedding else record.projector_paths
        return LoadOptions(
            num_ctx=num_ctx, num_batch=num_batch, num_gpu=num_gpu, num_thread=opts.get("num_thread", 0),
            use_mmap=opts.get("use_mmap", True), embedding=embedding,
            num_parallel=1 if embedding else num_parallel(), projector=str(projectors[0]) if projectors else "",
        )

    def _acquire(self, record: ModelRecord, opts: Mapping[str, Any], *, embedding: bool) -> tuple[Loaded, int]:
        load = self._load_options(record, opts, embedding)

        def describe(runner: Runner) -> dict[str, Any]:
            info = record.gguf_info()
            kv = _kv_bytes(info, load.num_ctx * load.num_parallel)  # each slot holds num_ctx tokens
            size = record.model_path.stat().st_size + kv + (Path(load.projector).stat().st_size if load.projector else 0)
            details = record.details.model_copy(update={"parent_model": ""})
            blocks = int(info.arch_value("block_count") or 0)
            layers = total_layers(blocks)
            on_gpu = offloaded_layers(load.num_gpu, blocks, gpu_offload_supported())
            return dict(
                name=record.name.short, digest=record.manifest_digest, size=size,
                size_vram=size * on_gpu // layers, details=details.model_dump(),
                context_length=runner.n_ctx,  # the context each request gets (the decoder caps every slot at it)
                gpu_layers=on_gpu, layers=layers,
            )

        return self.scheduler.acquire((record.name.short, embedding), load, record.model_path, describe)

    def _load_only(self, record, model, keep, opts, stream, make):  # noqa: ANN001, ANN202
        start = time.perf_counter_ns()
        if keep == 0:
            self.scheduler.unload(record.name.short)
            response = make(model=model, created_at=now_rfc3339(), done=True, done_reason="unload")
        else:
            self._require(record, "completion", "generate")
            entry, load_ns = self._acquire(record, opts, embedding=False)
            self.scheduler.release(entry, keep)
            response = make(
                model=model, created_at=now_rfc3339(), done=True, done_reason="load",
                load_duration=load_ns, total_duration=time.perf_counter_ns() - start,
            )
        if hasattr(response, "response"):
            response.response = ""
        return ChunkStream(iter([response]), threading.Event()) if stream else response

    def _run(
        self, record: ModelRecord, prompt: Callable[[Runner], Any], opts: Mapping[str, Any],
        keep: float | None, format: str | Mapping[str, Any] | None, stream: bool = True,
        cancel: threading.Event | None = None, grammar: str | None = None, shift: bool | None = None,
        logprobs: tuple[bool, int] = (False, 0), trace: tuple[tuple[str, str] | None, bool] = (None, False),
    ) -> Iterator[Any]:
        """Yield (Token, None, ...) per text piece, then (None, Finished, load_ns, total_ns); a
        :class:`Queued` marker comes first, once the job is queued. ``prompt`` gives the loaded model's
        tokens for the request, fitted to its context, or its ``vision.MediaPrompt`` when it has images
        (those are not context-shifted, as llama-server does not shift multimodal sequences).

        ``trace``: the reply's thinking tags and whether the prompt opened the trace; a ``format``
        grammar then waits for the trace to close."""
        start = time.perf_counter_ns()
        grammar = grammar or _grammar(format)
        sampling = Sampling(
            temperature=float(opts["temperature"]), top_k=int(opts["top_k"]), top_p=float(opts["top_p"]),
            min_p=float(opts["min_p"]), typical_p=float(opts["typical_p"]),
            repeat_penalty=float(opts["repeat_penalty"]), repeat_last_n=int(opts["repeat_last_n"]),
            presence_penalty=float(opts["presence_penalty"]), frequency_penalty=float(opts["frequency_penalty"]),
            seed=int(opts["seed"]),
        )
        entry, load_ns = self._acquire(record, opts, embedding=False)
        try:
            runner = entry.runner
            if grammar:
                runner.check_grammar(grammar)
            fitted = prompt(runner)
            media = None if isinstance(fitted, list) else fitted
            tokens = fitted if media is None else media.tokens
            job = GenerationJob(
                tokens=tokens, sampling=sampling, stop=list(opts.get("stop") or []),
                num_predict=int(opts["num_predict"]), grammar=grammar,
                num_keep=kept_at_start(int(opts["num_keep"]), tokens, _bos(runner), runner.n_ctx),
                shift=shift is not False and media is None, stream=stream, cancel=cancel or threading.Event(),
                logprobs=logprobs[0], top_logprobs=logprobs[1],
                trace_tags=trace[0] if format not in (None, "") else None, trace_started=trace[1], media=media,
            )
            items = runner.stream(job)
            try:
                yield Queued(job.output)  # a front end may wait for the queue here without a thread
                for item in items:
                    if isinstance(item, Token):
                        yield item, None, load_ns, 0
                    else:
                        yield None, item, load_ns, time.perf_counter_ns() - start
            finally:
                items.close()  # stops decoding at once if our consumer went away
                job.cancel.set()  # also when it never started reading (closing an unstarted generator runs nothing)
        finally:
            self.scheduler.release(entry, keep)

    @staticmethod
    def _media(runner: Runner, text: str, pictures: Sequence[Picture], context: list[int] | None) -> Any:
        """The prompt split by libmtmd into text and image parts; refused here, before it is queued,
        when it cannot run: more tokens than the context holds, or an image with no text after it."""
        media = runner.tokenize_media(text, list(pictures), add_special=not context)
        media.prepend(context or [])
        if media.ends_with_image:
            media.close()
            raise InvalidRequest("the prompt ends with an image: put some text after it")
        if len(media.tokens) >= runner.n_ctx:
            media.close()
            raise InvalidRequest(f"the prompt and its {len(pictures)} image(s) take {len(media.tokens)} tokens "
                                 f"({media.image_tokens} for the images), more than the context holds "
                                 f"(num_ctx {runner.n_ctx}): send fewer or smaller images, or raise num_ctx")
        return media

    @staticmethod
    def _deliver(chunks, wrap, stream, join, cancel):  # noqa: ANN001, ANN205
        if stream:
            def iterate():  # noqa: ANN202
                try:
                    for chunk in chunks:
                        yield chunk if isinstance(chunk, Queued) else wrap(*chunk)
                finally:
                    chunks.close()

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


def _window(num_ctx: int, opts: Mapping[str, Any], truncate: bool | None) -> ContextWindow:
    return ContextWindow(num_ctx=num_ctx, num_predict=int(opts["num_predict"]), num_keep=int(opts["num_keep"]),
                         truncate=truncate is not False)


def _bos(runner: Runner) -> list[int]:
    """The tokens the tokenizer puts before any text (BOS, or none)."""
    return runner.tokenize("", add_bos=True)


def _stats(fin: Finished, load_ns: int, total_ns: int) -> dict[str, int]:
    return dict(
        total_duration=total_ns, load_duration=load_ns, prompt_eval_count=fin.prompt_eval_count,
        prompt_eval_duration=fin.prompt_eval_duration, eval_count=fin.eval_count, eval_duration=fin.eval_duration,
    )


def _grammar(format: str | Mapping[str, Any] | None) -> str | None:
    if format in (None, ""):
        return None
    if format == "json":
        return JSON_GRAMMAR
    if isinstance(format, Mapping):
        return schema_grammar(dict(format))
    raise InvalidRequest(f'invalid format {format!r}: use "json" or a JSON schema object')


def _normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


def _kv_bytes(info: Any, n_ctx: int) -> int:
    """KV cache size (f16): n_ctx x layers x (k + v widths) x 2 bytes."""
    layers = int(info.arch_value("block_count") or 0)
    heads = int(info.arch_value("attention.head_count") or 1)
    kv_heads = int(info.arch_value("attention.head_count_kv") or heads)
    width = int(info.arch_value("embedding_length") or 0)
    k = int(info.arch_value("attention.key_length") or (width // heads if heads else 0))
    v = int(info.arch_value("attention.value_length") or k)
    return n_ctx * layers * kv_heads * (k + v) * 2


def _trace(tmpl: PromptTemplate, text: str, think: Any) -> tuple[tuple[str, str] | None, bool]:
    """The reply's thinking tags (None: no trace expected) and whether the prompt ``text`` opened it."""
    tags = tmpl.thinking_tags if think_enabled(think) and all(tmpl.thinking_tags) else None
    return tags, bool(tags) and text.rstrip().endswith(tags[0])


def _parsed(chunks: Iterator[Any], parser: ReplyParser) -> Iterator[Any]:
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


def _chat_message(part: ReplyPart) -> ChatMessage:
    return ChatMessage(role="assistant", content=part.content, thinking=part.thinking or None,
                       tool_calls=part.tool_calls or None)


def _with_tool_names(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A tool result that names its call only by ``tool_call_id`` gets that call's function name."""
    names: dict[str, str] = {}
    for m in messages:
        for call in m.get("tool_calls") or []:
            if isinstance(call, Mapping) and call.get("id"):
                names[str(call["id"])] = str((call.get("function") or {}).get("name") or "")
        if m["role"] == "tool" and not (m.get("tool_name") or m.get("name")) and m.get("tool_call_id"):
            m["tool_name"] = names.get(str(m["tool_call_id"]), "")
    return messages


def _last(statuses: Iterator[ProgressResponse]) -> ProgressResponse:
    """A non-streaming pull/push/create answers with its last progress message (Ollama's ``waitForStream``)."""
    last = ProgressResponse(status="success")
    for last in statuses:
        pass
    return last
