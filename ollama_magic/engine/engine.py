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
from ..types import (ChatMessage, ChatResponse, CreateRequest, DebugInfo, DetokenizeResponse, GenerateResponse,
                     ListResponse, ProgressResponse, RunningModel, RunningModels, ShowResponse, TokenizeResponse)
from .capabilities import capabilities, model_template
from .gpu import gpu_offload_supported, offloaded_layers, total_layers
from .images import NO_VISION, Picture, image_bytes, tag_content
from .images import pictures as decode_pictures
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
    stream and hands the model back, waiting for a ``next()`` running elsewhere to return first."""

    def __init__(self, chunks: Iterator[Any], cancel: threading.Event) -> None:
        self._chunks = chunks
        self._cancel = cancel
        self._lock = threading.RLock()
        self._closed = False

    def __iter__(self) -> "ChunkStream":
        return self

    def __next__(self) -> Any:
        with self._lock:
            if self._closed:
                raise StopIteration
            return next(self._chunks)

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
        debug_render_only: bool = False,
        **_: Any,
    ) -> GenerateResponse | Iterator[GenerateResponse]:
        """``debug_render_only`` (Ollama's ``_debug_render_only``) returns the prompt without running it."""
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
        think = self._think(model, tmpl, think, format) if not raw else check_think(think)
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
        parser = self._reply_parser(tmpl, text, think if not raw else False, None)
        cancel = request_cancel_event()
        chunks = self._run(record, text, opts, keep, format, context=list(context) if context else None,
                           stream=stream, cancel=cancel, pictures=pics)

        def wrap(part: ReplyPart | None, fin: Finished | None, load_ns: int, total_ns: int) -> GenerateResponse:
            part = part or ReplyPart()
            fields = dict(model=model, created_at=now_rfc3339(), response=part.content, thinking=part.thinking or None)
            if fin is None:
                return GenerateResponse(**fields, done=False)
            return GenerateResponse(**fields, done=True, done_reason=fin.done_reason, context=fin.context,
                                    **_stats(fin, load_ns, total_ns))

        def join(parts: list[ReplyPart], last: GenerateResponse) -> GenerateResponse:
            whole = join_parts(parts)
            return last.model_copy(update={"response": whole.content, "thinking": whole.thinking or None})

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
        debug_render_only: bool = False,
        **_: Any,
    ) -> ChatResponse | Iterator[ChatResponse]:
        """Beyond ``ollama.Client.chat``: ``tool_choice`` (OpenAI's "none", "required" or a named function,
        forced with a grammar) and ``debug_render_only`` (the prompt, not run)."""
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
        think = self._think(model, tmpl, think, format or grammar)
        text = tmpl.render_chat(msgs, tool_dicts, think=think)
        if debug_render_only:
            message = ChatMessage(role="assistant", content="")
            debug = DebugInfo(rendered_template=text, image_count=len(pics) or None)
            return self._rendered(ChatResponse(model=model, created_at=now_rfc3339(), message=message, done=False,
                                               debug_info=debug), stream)
        parser = self._reply_parser(tmpl, text, think, tool_dicts)
        cancel = request_cancel_event()
        chunks = self._run(record, text, opts, keep, format, stream=stream, cancel=cancel, grammar=grammar,
                           pictures=pics)

        def wrap(part: ReplyPart | None, fin: Finished | None, load_ns: int, total_ns: int) -> ChatResponse:
            message = _chat_message(part or ReplyPart())
            if fin is None:
                return ChatResponse(model=model, created_at=now_rfc3339(), message=message, done=False)
            return ChatResponse(
                model=model, created_at=now_rfc3339(), message=message, done=True, done_reason=fin.done_reason,
                **_stats(fin, load_ns, total_ns),
            )

        def join(parts: list[ReplyPart], last: ChatResponse) -> ChatResponse:
            return last.model_copy(update={"message": _chat_message(join_parts(parts))})

        return self._deliver(_parsed(chunks, parser), wrap, stream, join, cancel)

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
        opts = self._options(record, options)
        entry, load_ns = self._acquire(record, opts, embedding=True)
        try:
            vectors, count = (entry.runner.embed(texts, truncate is not False) if texts else ([], 0))
        finally:
            self.scheduler.release(entry, keep)
        if dimensions:
            if dimensions < 1:
                raise InvalidRequest("dimensions must be a positive number")
            vectors = [_normalize(v[:dimensions]) for v in vectors]
        return ollama.EmbedResponse(
            model=model, embeddings=vectors, total_duration=time.perf_counter_ns() - start,
            load_duration=load_ns, prompt_eval_count=count,
        )

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
        400. Under a grammar (format, a forced tool call) the trace is left out: the grammar would
        constrain it too."""
        think = check_think(think)
        if all(tmpl.thinking_tags):
            if constrained:
                return False
            return True if think is None else think
        if think_enabled(think):
            raise InvalidRequest(f'"{model}" does not support thinking')
        return think

    @staticmethod
    def _reply_parser(tmpl: PromptTemplate, text: str, think: Any, tools: Sequence[Any] | None) -> ReplyParser:
        tags = tmpl.thinking_tags if think_enabled(think) and all(tmpl.thinking_tags) else None
        started = bool(tags) and text.rstrip().endswith(tags[0])
        return ReplyParser(thinking=tags, started_thinking=started, tools=tools, tool_tag=tmpl.tool_tag)

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
        num_ctx = max(1, min(int(opts["num_ctx"]), trained))  # Ollama caps at the trained context
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
        self, record: ModelRecord, text: str, opts: Mapping[str, Any], keep: float | None,
        format: str | Mapping[str, Any] | None, context: list[int] | None = None, stream: bool = True,
        cancel: threading.Event | None = None, grammar: str | None = None, pictures: Sequence[Picture] = (),
    ) -> Iterator[tuple[str | None, Finished | None, int, int]]:
        """Yield (piece, None, ...) per text piece, then (None, Finished, load_ns, total_ns)."""
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
            n_vocab = runner.n_vocab
            if context and not all(0 <= t < n_vocab for t in context):
                raise InvalidRequest(f"context holds token ids outside the model's vocabulary (0..{n_vocab - 1})")
            media = self._media(runner, text, pictures, context) if pictures else None
            tokens = media.tokens if media is not None else (context or []) + runner.tokenize(text, add_bos=not context)
            job = GenerationJob(
                tokens=tokens, sampling=sampling, stop=list(opts.get("stop") or []),
                num_predict=int(opts["num_predict"]), num_keep=int(opts["num_keep"]), grammar=grammar,
                stream=stream, cancel=cancel or threading.Event(), media=media,
            )
            items = runner.stream(job)
            try:
                for item in items:
                    if isinstance(item, Token):
                        yield item.text, None, load_ns, 0
                    else:
                        yield None, item, load_ns, time.perf_counter_ns() - start
            finally:
                items.close()  # stops decoding at once if our consumer went away
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
                    for piece, fin, load_ns, total_ns in chunks:
                        yield wrap(piece, fin, load_ns, total_ns)
                finally:
                    chunks.close()

            return ChunkStream(iterate(), cancel)
        parts: list[Any] = []
        last = None
        for piece, fin, load_ns, total_ns in chunks:
            if piece:
                parts.append(piece)
            if fin is not None:
                last = wrap(None, fin, load_ns, total_ns)
        return join(parts, last)


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


def _parsed(chunks: Iterator[tuple[Any, Finished | None, int, int]], parser: ReplyParser) -> Iterator[tuple[ReplyPart, Finished | None, int, int]]:
    """The runner's text pieces as reply parts; pieces held back by the parsers yield nothing yet."""
    try:
        for piece, fin, load_ns, total_ns in chunks:
            if fin is None:
                part = parser.add(piece)
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
