"""``Engine``: Ollama's API as a Python object, served in-process on llama.cpp.

The method names, arguments and result types are those of the official ``ollama.Client``, so code
written for ``ollama.Client()`` runs unchanged against ``Engine()``. Every front end (magics,
widgets, the HTTP server) calls these methods; none of them talks to llama.cpp directly.
"""

from __future__ import annotations

import contextvars
import importlib.util
import logging
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import ollama

from ..defaults import INSTALL_HINT, embedded_model, register_if_default, register_with_progress
from ..errors import InvalidRequest, RegistryError
from ..formatting import now_rfc3339
from ..metrics import EngineMetrics
from ..registry import pull_model, push_model
from ..store import ModelRecord, ModelStore
from ..store.manifests import ADAPTER
from ..types import (ChatMessage, ChatResponse, ClassifyResponse, ContextFit, CreateRequest, DebugInfo, DetokenizeResponse,
                     GenerateResponse, ListResponse, ProgressResponse, RerankResponse, RunningModel, RunningModels,
                     ShowResponse, TokenizeResponse)
from . import requests
from .capabilities import capabilities, model_template
from .choices import check_choices, label_tokens, score_labels
from .rerank import LABELS, check_rerank, cut_document, pair_tokens, ranked, relevance_prompt
from .context_window import FittedChat, fit_chat, fit_prompt, kept_at_start
from .delivery import (CANCEL_SCOPE, DEFER_REPLY, ChunkStream, Pending,  # noqa: F401 - CANCEL_SCOPE...: their old home
                       deliver, parsed, request_cancel_event, single)
from .gpu import gpu_offload_supported
from .images import Picture, tag_content
from .jobs import Queued
from .loading import describe, load_options, plan_load
from .llama_context import KV_CACHE_TYPES
from .planner import DeviceRoom, LoadPlan
from .logprobs import check_top_logprobs
from .lora import lora_scales
from .prompt import GoPrompt, PromptTemplate
from .reply import ReplyParser, ReplyPart, join_parts
from .runner import Finished, GenerationJob, LoadOptions, Runner, Sampling, Token
from .scheduler import Loaded, LoadedKey, LoadedStats, Scheduler, parse_keep_alive
from .thinking import check_think
from .toolcalls import forced_call_grammar, resolve_tool_choice

log = logging.getLogger("ollama_magic")
#: parsed templates an Engine keeps (the models' own and recent per-request overrides)
TEMPLATE_CACHE = 64

# Request normalisation lives in ``requests``, the delivery protocol in ``delivery``; the names this
# module used keep their short private aliases here.
_as_dict, _tool_dict, _grammar, _trace = requests.as_dict, requests.tool_dict, requests.grammar, requests.trace
_with_tool_names, _window = requests.with_tool_names, requests.window


def _label_think(tmpl: PromptTemplate) -> bool | None:
    """Classification's think setting: a thinking model is asked not to think, so the label is its first word."""
    return False if any(tmpl.thinking_tags) else None


@dataclass
class _Request:
    """What ``generate`` and ``chat`` share once a request is checked: the model, its options and
    how the reply goes back."""

    model: str
    record: ModelRecord
    keep: float | None
    opts: dict[str, Any]
    stream: bool
    format: str | Mapping[str, Any] | None
    shift: bool | None
    truncate: bool | None
    logprobs: tuple[bool, int]


class Engine:
    """The in-kernel engine: a model store plus a scheduler of loaded llama.cpp models."""

    def __init__(self, store: ModelStore | None = None, *, max_loaded: int | None = None) -> None:
        self.store = store or ModelStore()
        self.scheduler = Scheduler(max_loaded)
        #: Prometheus metrics, fed here whichever front end asks (the server serves them at /metrics)
        self.metrics = EngineMetrics(self.scheduler.stats, _column_cache_path)
        self._templates: OrderedDict[tuple[str, str | None], PromptTemplate] = OrderedDict()
        self._templates_lock = threading.Lock()

    def close(self) -> None:
        """Unload every model and stop the keep-alive thread."""
        self.scheduler.shutdown()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- model management (the store) --------------------------------------------------------

    def list(self) -> ListResponse:
        """``/api/tags``: the store's listing, with each model's capabilities by the rule ``show`` uses."""
        return self.store.list(capabilities=self._capabilities)

    def show(self, model: str, *, verbose: bool = False) -> ShowResponse:
        record = self.store.resolve(model, on_missing=register_if_default)
        resp = self.store.show_record(record, verbose=verbose)
        resp.capabilities = self._capabilities(record)
        return resp

    def copy(self, source: str, destination: str) -> ollama.StatusResponse:
        self.store.copy(source, destination, on_missing=register_if_default)
        return ollama.StatusResponse(status="success")

    def delete(self, model: str) -> ollama.StatusResponse:
        record = self.store.resolve(model)
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
        statuses = self.store.create(model, request, trusted=local_paths, base_dir=base, on_bytes=on_bytes,
                                     on_missing=register_if_default)
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
                    gpu_layers=e.gpu_layers, layers=e.layers, devices=dict(e.shares) or None,
                    notes=list(e.notes) or None,
                )
                for e in entries
            ],
            gpu_offload=gpu_offload_supported(),
        )

    def stats(self) -> list[LoadedStats]:
        """Each loaded model's load now (active and waiting requests, tokens decoded, peak batch),
        including models unloaded while requests still use them."""
        return self.scheduler.stats()

    def load(self, model: str, keep_alive: float | str | None = None) -> ollama.GenerateResponse:
        """Load a model now (Ollama: a generate request with an empty prompt)."""
        return self.generate(model, keep_alive=keep_alive)  # type: ignore[return-value]

    def unload(self, model: str) -> bool:
        """Unload a model now; False if it was not loaded. An embedded default that is not installed
        is not registered just to say so (that would convert MiniLM): it is not found."""
        return self.scheduler.unload(self.store.resolve(model).name.short)

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
        req = self._prepare(model, options, keep_alive, stream=stream, format=format, shift=shift,
                            truncate=truncate, logprobs=logprobs, top_logprobs=top_logprobs)
        if not prompt and not suffix and not context and not debug_render_only:
            return self._load_only(req.record, model, req.keep, req.opts, stream, lambda **kw: GenerateResponse(**kw))
        record = req.record
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
            return single(GenerateResponse(model=model, created_at=now_rfc3339(), response="", done=False,
                                           debug_info=debug), stream)
        tokens = partial(self._generate_tokens, text=text, pics=pics, earlier=list(context) if context else None,
                         opts=req.opts, truncate=truncate)
        return self._respond(req, tmpl, text, think if not raw else False, tokens, partial(_generate_chunk, model),
                             _generate_reply)

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
        req = self._prepare(model, options, keep_alive, stream=stream, format=format, shift=shift,
                            truncate=truncate, logprobs=logprobs, top_logprobs=top_logprobs)
        msgs = _with_tool_names([self._message(m) for m in (messages or [])])
        if not msgs and not debug_render_only:
            return self._load_only(
                req.record, model, req.keep, req.opts, stream,
                lambda **kw: ChatResponse(message=ChatMessage(role="assistant", content=""), **kw),
            )
        msgs, pics, tool_dicts, grammar, tmpl, think, render = self._chat_prompt(req, msgs, tools, tool_choice, think)
        text = render(msgs)
        if debug_render_only:
            return self._chat_rendered(req, msgs, render, text, pics)
        dropped = [0]  # how many messages fitting the context left out: the prompt says, the last chunk tells
        tokens = partial(self._chat_tokens, msgs=msgs, render=render, text=text, pics=pics, opts=req.opts,
                         truncate=truncate, dropped=dropped)
        return self._respond(req, tmpl, text, think, tokens, partial(_chat_chunk, model, dropped), _chat_reply,
                             grammar=grammar, tools=tool_dicts)

    def _chat_prompt(self, req: _Request, msgs: list[dict[str, Any]], tools: Sequence[Any] | None,
                     tool_choice: str | Mapping[str, Any] | None, think: bool | str | None) -> tuple[Any, ...]:
        """What a chat's prompt is made of, for ``chat`` and ``count_tokens`` alike: the turn's messages,
        pictures, tools and grammar (``_chat_turn``), the template, the think setting, and the renderer."""
        msgs, pics, tool_dicts, grammar = self._chat_turn(req, msgs, tools, tool_choice)
        tmpl = self._template(req.record, None)
        think = self._think(req.model, tmpl, think, grammar)

        def render(kept: list[dict[str, Any]]) -> str:
            return tmpl.render_chat(kept, tool_dicts, think=think)

        return msgs, pics, tool_dicts, grammar, tmpl, think, render

    def count_tokens(self, model: str, messages: Sequence[Any], *, tools: Sequence[Any] | None = None,
                     think: bool | str | None = None, options: Mapping[str, Any] | None = None,
                     tool_choice: str | Mapping[str, Any] | None = None, truncate: bool | None = None,
                     keep_alive: float | str | None = None) -> int:
        """The prompt tokens ``chat`` with these arguments would feed the model (its
        ``prompt_eval_count``): the same rendering, fitting and tokenizer, images included, without
        generating (Anthropic's count_tokens). Loads the model, as counting needs its tokenizer."""
        req = self._prepare(model, options, keep_alive, stream=False, format=None, shift=None, truncate=truncate,
                            logprobs=None, top_logprobs=None)
        msgs = _with_tool_names([self._message(m) for m in messages])
        msgs, pics, _tools, _grammar, _tmpl, _think, render = self._chat_prompt(req, msgs, tools, tool_choice, think)
        entry, _ = self._acquire(req.record, req.opts, embedding=False)
        try:
            prompt = self._chat_tokens(entry.runner, msgs=msgs, render=render, text=render(msgs), pics=pics,
                                       opts=req.opts, truncate=truncate, dropped=[0])
            if isinstance(prompt, list):
                return len(prompt)
            try:
                return len(prompt.tokens)
            finally:
                prompt.close()
        finally:
            self.scheduler.release(entry, req.keep)

    # ---- generate and chat: one path ---------------------------------------------------------

    def _prepare(self, model: str, options: Mapping[str, Any] | None, keep_alive: float | str | None, *,
                 stream: bool, format: str | Mapping[str, Any] | None, shift: bool | None,
                 truncate: bool | None, logprobs: bool | None, top_logprobs: int | None) -> _Request:
        """The checks and settings every generation starts with, in Ollama's order."""
        top = check_top_logprobs(top_logprobs)
        record = self._record(model)
        return _Request(model=model, record=record, keep=parse_keep_alive(keep_alive),
                        opts=self._options(record, options), stream=stream, format=format, shift=shift,
                        truncate=truncate, logprobs=(bool(logprobs), top))

    def _respond(self, req: _Request, tmpl: PromptTemplate, text: str, think: Any,
                 tokens: Callable[[Runner], Any], wrap: Callable[..., Any], join: Callable[[list[Any], Any], Any],
                 *, grammar: str | None = None, tools: list[dict[str, Any]] | None = None) -> Any:
        """Run the prompt ``text`` (``tokens`` gives the loaded model's tokens for it) and deliver the
        reply, parsed into content, thinking and tool calls, as the caller asked (``delivery``)."""
        trace = _trace(tmpl, text, think)
        parser = ReplyParser(thinking=trace[0], started_thinking=trace[1], tools=tools, tool_tag=tmpl.tool_tag)
        cancel = request_cancel_event()
        chunks = self._run(req.record, tokens, req.opts, req.keep, req.format, stream=req.stream, cancel=cancel,
                           grammar=grammar, shift=req.shift, logprobs=req.logprobs, trace=trace)
        return deliver(parsed(chunks, parser), wrap, req.stream, join, cancel)

    def _generate_tokens(self, runner: Runner, *, text: str, pics: list[Picture], earlier: list[int] | None,
                         opts: Mapping[str, Any], truncate: bool | None) -> Any:
        """A generate prompt's tokens after the ``context`` it continues, fitted to the loaded context."""
        n_vocab = runner.n_vocab
        if earlier and not all(0 <= t < n_vocab for t in earlier):
            raise InvalidRequest(f"context holds token ids outside the model's vocabulary (0..{n_vocab - 1})")
        if pics:  # nothing is left out of a prompt with images: it fits, or it is refused
            return self._media(runner, text, pics, earlier)
        tokens = (earlier or []) + runner.tokenize(text, add_bos=not earlier)
        return fit_prompt(tokens, _window(runner.n_ctx, opts, truncate), _bos(runner))

    def _chat_turn(self, req: _Request, msgs: list[dict[str, Any]], tools: Sequence[Any] | None,
                   tool_choice: str | Mapping[str, Any] | None) -> tuple[list[dict[str, Any]], list[Picture],
                                                                         list[dict[str, Any]] | None, str | None]:
        """A chat's messages as the template gets them (images tagged, the model's own system prompt and
        messages first), its pictures, its tools, and the grammar a forced tool call needs."""
        record = req.record
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
            if req.format:
                raise InvalidRequest("format cannot be combined with a forced tool_choice")
            grammar = forced_call_grammar(forced, tmpl.tool_tag)
        return msgs, pics, tool_dicts, grammar

    def _chat_rendered(self, req: _Request, msgs: list[dict[str, Any]], render: Callable[[list[dict[str, Any]]], str],
                       text: str, pics: list[Picture]) -> Any:
        """A render-only chat: the prompt, and what fitting the context would leave out of it."""
        if pics:  # as when it runs: a chat with images is not fitted (it fits, or it is refused)
            num_ctx = self._load_options(req.record, req.opts, embedding=False).num_ctx
            fitted, fit = FittedChat(msgs, text, 0), ContextFit(num_ctx=num_ctx)
        else:
            fitted, fit = self._fit_without_running(req.record, req.opts, msgs, render, text, req.truncate, req.keep)
        message = ChatMessage(role="assistant", content="")
        info = DebugInfo(rendered_template=fitted.text, context_fit=fit, image_count=len(pics) or None)
        return single(ChatResponse(model=req.model, created_at=now_rfc3339(), message=message, done=False,
                                   debug_info=info), req.stream)

    def _chat_tokens(self, runner: Runner, *, msgs: list[dict[str, Any]], render: Callable[[list[dict[str, Any]]], str],
                     text: str, pics: list[Picture], opts: Mapping[str, Any], truncate: bool | None,
                     dropped: list[int]) -> Any:
        """A chat's tokens, its oldest turns left out until it fits the loaded context."""
        if pics:  # nothing is left out of a chat with images: it fits, or it is refused
            return self._media(runner, text, pics, None)
        window = _window(runner.n_ctx, opts, truncate)
        fitted = fit_chat(msgs, render, runner.tokenize, window, text)
        dropped[0] = fitted.dropped
        tokens = fitted.tokens if fitted.tokens is not None else runner.tokenize(fitted.text)
        return fit_prompt(tokens, window, _bos(runner))

    def classify(
        self,
        model: str = "",
        prompt: str | None = None,
        *,
        choices: Sequence[str],
        messages: Sequence[Any] | None = None,
        system: str | None = None,
        raw: bool | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        truncate: bool | None = None,
        **_: Any,
    ) -> ClassifyResponse:
        """How likely the model finds each of ``choices`` as the reply to ``prompt`` (templated as
        ``generate`` does, or as written with ``raw``) or to ``messages`` (as ``chat`` does): each
        label's probability among them, from the logits, never sampled (see ``choices.py``). A thinking
        model is asked not to think, so the label is its first word."""
        labels = check_choices(choices)
        if (prompt is None) == (messages is None):
            raise InvalidRequest("classify needs a prompt or messages (one of them)")
        start = time.perf_counter_ns()
        req = self._prepare(model, options, keep_alive, stream=False, format=None, shift=False, truncate=truncate,
                            logprobs=None, top_logprobs=None)
        tmpl = self._template(req.record, None)
        think = _label_think(tmpl)
        if messages is not None:
            msgs, pics, _tools, _grammar, _tmpl, _think, render = self._chat_prompt(
                req, [self._message(m) for m in messages], None, None, think)
            if pics:
                raise InvalidRequest("classify takes text only: send the messages without images")
            tokens = partial(self._chat_tokens, msgs=msgs, render=render, text=render(msgs), pics=[], opts=req.opts,
                             truncate=truncate, dropped=[0])
        else:
            self._require(req.record, "completion", "generate")
            text = prompt if raw else tmpl.render_generate(
                prompt, system if system is not None else (req.record.system or ""), think=think)
            tokens = partial(self._generate_tokens, text=text, pics=[], earlier=None, opts=req.opts, truncate=truncate)
        lora = _lora(req.record, req.opts)
        entry, load_ns = self._acquire(req.record, req.opts, embedding=False)
        try:
            runner = entry.runner
            context = tokens(runner)
            label_ids = label_tokens(lambda label: runner.tokenize(label, add_bos=False), labels, context,
                                     runner.n_ctx)
            totals = score_labels(runner.stream, context, label_ids, request_cancel_event(), lora=lora)
            self.metrics.prompt_read(entry.name, len(context))
        finally:
            self.scheduler.release(entry, req.keep)
        return ClassifyResponse.from_logprobs(
            model, now_rfc3339(), dict(zip(labels, totals)), prompt_eval_count=len(context), load_duration=load_ns,
            total_duration=time.perf_counter_ns() - start)

    def rerank(self, model: str, query: str, documents: Sequence[str], *, top_n: int | None = None,
               options: Mapping[str, Any] | None = None, keep_alive: float | str | None = None,
               truncate: bool = True) -> RerankResponse:
        """``documents`` by relevance to ``query``, most relevant first, the ``top_n`` best (all when
        None). A cross-encoder (llama.cpp's rank pooling) scores each pair as llama-server does; any
        chat model scores the probability it answers "yes" to ``rerank.RELEVANCE_PROMPT``. A document
        too long for the context is cut (``truncate``) or refused. See ``engine/rerank.py``."""
        docs = check_rerank(query, documents, top_n)
        record = self._record(model)
        info = record.gguf_info()
        if not info.is_reranker and info.is_embedding_model:
            raise InvalidRequest(f'model "{model}" cannot rank: it is an embedding model without a classifier '
                                 "(llama.cpp's rank pooling); use a reranker (cross-encoder) or a chat model")
        if info.is_reranker:
            keep = parse_keep_alive(keep_alive)
            entry, _ = self._acquire(record, self._options(record, options), embedding=True)
            try:  # a client that goes away stops the pairs still to decode (up to MAX_DOCUMENTS of them)
                ectx = entry.runner.embedding_context()
                pairs = [pair_tokens(ectx, query, doc, truncate) for doc in docs]
                rows, count = entry.runner.embed_tokens(pairs, docs, normalize=False, alone=True,
                                                        cancel=request_cancel_event())
                self.metrics.prompt_read(entry.name, count)  # the chat-model path counts in classify
            finally:
                self.scheduler.release(entry, keep)
            return ranked(model, [row[0] for row in rows], docs, top_n, count)
        self._require(record, "completion", "rerank")
        req = self._prepare(model, options, keep_alive, stream=False, format=None, shift=False, truncate=truncate,
                            logprobs=None, top_logprobs=None)
        entry, _ = self._acquire(req.record, req.opts, embedding=False)
        try:  # fitted once, with the loaded model's tokenizer and the chat prompt classify renders
            runner = entry.runner
            think = _label_think(self._template(record, None))

            def prompt_tokens(content: str) -> int:
                msgs, *_, render = self._chat_prompt(req, [{"role": "user", "content": content}], None, None, think)
                return len(runner.tokenize(render(msgs)))

            fitted = [cut_document(lambda text: runner.tokenize(text, add_bos=False), runner.detokenize,
                                   prompt_tokens, query, doc, runner.n_ctx, truncate) for doc in docs]
            width = max(1, min(len(docs), runner.load_options.num_parallel))
        finally:
            self.scheduler.release(entry, req.keep)

        def score(doc: str) -> ClassifyResponse:
            return self.classify(model, messages=[{"role": "user", "content": relevance_prompt(query, doc)}],
                                 choices=list(LABELS), options=options, keep_alive=keep_alive, truncate=False)

        with ThreadPoolExecutor(width, thread_name_prefix="rerank") as pool:  # the decoder batches them
            replies = list(pool.map(lambda doc: contextvars.copy_context().run(score, doc), fitted))
        return ranked(model, [r.probabilities[LABELS[0]] for r in replies], docs, top_n,
                      sum(r.prompt_eval_count for r in replies))

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
        _lora(record, opts)  # checked as on generate (an unknown adapter is a 400); embeddings run at scale 1
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
            self.metrics.prompt_read(entry.name, count)
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
        opts = self._options(record, options)
        _lora(record, opts)  # as embed
        entry, _ = self._acquire(record, opts, embedding=True)
        try:
            if not prompt:
                return ollama.EmbeddingsResponse(embedding=[])
            vectors, count = entry.runner.embed([prompt], True, normalize=False)
            self.metrics.prompt_read(entry.name, count)
        finally:
            self.scheduler.release(entry, keep)
        return ollama.EmbeddingsResponse(embedding=vectors[0])

    def search(self, name: str | Sequence[str], query: str, k: int = 5, *, rerank: str | None = None) -> Any:
        """The ``k`` chunks of ``%ollama learn`` index ``name`` (or several) nearest to ``query``, as a
        DataFrame (rank, score, source, position, cite, text): the query is embedded with the model the
        index was learned with, here; the index is ``knowledge/``'s, beside the store. ``rerank`` names
        a model that reorders a larger pool of candidates first (``Engine.rerank``)."""
        from ..knowledge.search import reranker, search

        return search(self, name, query, k, rerank=reranker(self, rerank) if rerank else None)

    # ---- internals ---------------------------------------------------------------------------

    def _record(self, model: str) -> ModelRecord:
        requests.check_model_name(model)
        return self.store.resolve(model, on_missing=register_if_default)  # an embedded default: on first use

    def _capabilities(self, record: ModelRecord) -> list[str]:
        return capabilities(record, self._template(record, None))

    def _require(self, record: ModelRecord, capability: str, verb: str) -> None:
        requests.require(record, self._capabilities(record), capability, verb)

    def _pictures(self, record: ModelRecord, images: list[Any]) -> list[Picture]:
        if not images:
            return []
        return requests.pictures(record, self._capabilities(record), images)

    _message = staticmethod(requests.message)
    _think = staticmethod(requests.think)

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


    def _template(self, record: ModelRecord, override: str | None) -> PromptTemplate:
        """The parsed template, cached: the last TEMPLATE_CACHE used (a client may send a new override
        with every request; the cache must not grow with them)."""
        key = (record.manifest_digest, override)
        with self._templates_lock:
            tmpl = self._templates.get(key)
            if tmpl is not None:
                self._templates.move_to_end(key)
                return tmpl
        tmpl = GoPrompt(override) if override else model_template(record)
        with self._templates_lock:
            self._templates[key] = tmpl
            while len(self._templates) > TEMPLATE_CACHE:
                self._templates.popitem(last=False)
        return tmpl

    def _options(self, record: ModelRecord, request: Mapping[str, Any] | None) -> dict[str, Any]:
        return requests.options(record.parameters, request)

    def _load_options(self, record: ModelRecord, opts: Mapping[str, Any], embedding: bool) -> LoadOptions:
        """The checked load options of ``record`` for ``opts`` (the rules: ``engine/loading.py``)."""
        return load_options(record, opts, embedding)

    def _acquire(self, record: ModelRecord, opts: Mapping[str, Any], *, embedding: bool) -> tuple[Loaded, int]:
        """The loaded model for a request: its load options checked here (every request), its
        placement planned by the scheduler only when it must load (``loading.plan_load``)."""
        load = load_options(record, opts, embedding)
        planner = _Planner(record, opts, embedding, load)
        return self.scheduler.acquire(LoadedKey(record.name.short, embedding), load, record.model_path,
                                      lambda runner: describe(record, runner), planner=planner)

    def plan(self, model: str, options: Mapping[str, Any] | None = None, *, num_ctx: int | None = None,
             parallel: int | None = None, kv_cache_type: str | None = None) -> Any:
        """How ``model`` would load now, loading nothing: a DataFrame with one row per device (layers,
        weights, KV cache, compute buffers, total and the room it has), and in ``.attrs`` the fitted
        ``num_ctx``/``parallel``/``num_gpu``, the largest context that fits as asked, the models the load
        would unload first, and the planner's notes. The scheduler's own rule (``Scheduler.preview``)."""
        import pandas as pd

        record = self._record(model)
        embedding = record.gguf_info().is_embedding_model
        opts = self._options(record, {**(options or {}), **({"num_ctx": num_ctx} if num_ctx else {})})
        load = load_options(record, opts, embedding, parallel=parallel)
        if kv_cache_type is not None:
            if kv_cache_type not in KV_CACHE_TYPES:
                raise InvalidRequest(f"kv_cache_type must be one of {', '.join(KV_CACHE_TYPES)}, got {kv_cache_type!r}")
            load = replace(load, kv_cache_type=kv_cache_type)
        placed, evicted = self.scheduler.preview(_Planner(record, opts, embedding, load))
        frame = pd.DataFrame([
            dict(device=s.name, kind=s.kind, layers=s.layers, weights=s.weights, kv_cache=s.kv_cache,
                 compute=s.compute, total=s.total, available=s.available, fits=s.fits)
            for s in placed.shares
        ])
        frame.attrs.update(
            model=record.name.short, num_ctx=placed.options.num_ctx, parallel=placed.options.num_parallel,
            num_gpu=placed.options.num_gpu, layers=placed.layers, size=placed.size, fits=placed.fits,
            largest_num_ctx=self._largest_context(record, opts, embedding, load) if placed.fits else 0,
            evicts=evicted, notes=list(placed.notes) or ([] if placed.fits else [placed.shortfall()]),
        )
        return frame

    def _largest_context(self, record: ModelRecord, opts: Mapping[str, Any], embedding: bool,
                         load: LoadOptions) -> int:
        """The largest ``num_ctx`` (doubling from the asked one, up to the model's trained context)
        that the devices hold as asked, with the asked slots, after the evictions a load would make."""
        trained = record.gguf_info().context_length or load.num_ctx
        best, num_ctx = load.num_ctx, load.num_ctx
        while num_ctx < trained:
            num_ctx = min(trained, num_ctx * 2)
            placed, _ = self.scheduler.preview(_Planner(record, opts, embedding, replace(load, num_ctx=num_ctx)))
            if not placed.fits or placed.lowered:
                break
            best = num_ctx
        return best

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
        return single(response, stream)

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
        lora = _lora(record, opts)  # an unknown adapter id is refused before any load
        entry, load_ns = self._acquire(record, opts, embedding=False)
        try:
            runner = entry.runner
            if grammar:
                _check_grammar(runner, grammar)
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
                lora=lora,
            )
            items = runner.stream(job)
            try:
                yield Queued(job.output)  # a front end may wait for the queue here without a thread
                for item in items:
                    if isinstance(item, Token):
                        yield item, None, load_ns, 0
                    else:
                        total_ns = time.perf_counter_ns() - start
                        self.metrics.generated(entry.name, item.prompt_eval_count, item.eval_count,
                                               item.eval_duration, total_ns)
                        yield None, item, load_ns, total_ns
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



#: What a runner's model answers the same every time, asked once per runner (and forgotten with it).
_per_runner: weakref.WeakKeyDictionary[Runner, dict[str, Any]] = weakref.WeakKeyDictionary()
_per_runner_lock = threading.Lock()
_GRAMMARS_KEPT = 64  # grammars remembered as valid per runner (a schema per request would grow without end)


def _facts(runner: Runner) -> dict[str, Any]:
    with _per_runner_lock:
        facts = _per_runner.get(runner)
        if facts is None:
            facts = _per_runner[runner] = {"grammars": set()}
        return facts


def _bos(runner: Runner) -> list[int]:
    """The tokens the tokenizer puts before any text (BOS, or none): tokenized once per runner."""
    facts = _facts(runner)
    if "bos" not in facts:
        facts["bos"] = tuple(runner.tokenize("", add_bos=True))
    return list(facts["bos"])


def _check_grammar(runner: Runner, grammar: str) -> None:
    """An invalid grammar crashes llama.cpp at sampling time, so each is tried on its own first
    (``Runner.check_grammar``); a grammar that passed for this runner is not compiled again for the
    check (a client sends the same ``format`` with every request)."""
    grammars = _facts(runner)["grammars"]
    if grammar in grammars:
        return
    runner.check_grammar(grammar)
    with _per_runner_lock:
        if len(grammars) >= _GRAMMARS_KEPT:
            grammars.clear()
        grammars.add(grammar)


class _Planner:
    """One model's placement over the rooms the scheduler offers (``loading.plan_load``)."""

    def __init__(self, record: ModelRecord, opts: Mapping[str, Any], embedding: bool, load: LoadOptions) -> None:
        self.record, self.opts, self.embedding, self.load = record, opts, embedding, load

    def __call__(self, rooms: list[DeviceRoom]) -> LoadPlan:
        return plan_load(self.record, self.opts, self.embedding, rooms=rooms, load=self.load)


def _lora(record: ModelRecord, opts: Mapping[str, Any]) -> tuple[float, ...]:
    """The request's LoRA scales, one per ADAPTER of the model (``lora.lora_scales``)."""
    return lora_scales(opts, len(record.manifest.layers_of(ADAPTER)), record.name.short)


def _stats(fin: Finished, load_ns: int, total_ns: int) -> dict[str, int]:
    return dict(
        total_duration=total_ns, load_duration=load_ns, prompt_eval_count=fin.prompt_eval_count,
        prompt_eval_duration=fin.prompt_eval_duration, eval_count=fin.eval_count, eval_duration=fin.eval_duration,
    )


def _normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


def _chat_message(part: ReplyPart) -> ChatMessage:
    return ChatMessage(role="assistant", content=part.content, thinking=part.thinking or None,
                       tool_calls=part.tool_calls or None)


def _generate_chunk(model: str, part: ReplyPart | None, fin: Finished | None, load_ns: int,
                    total_ns: int) -> GenerateResponse:
    part = part or ReplyPart()
    fields = dict(model=model, created_at=now_rfc3339(), response=part.content, thinking=part.thinking or None,
                  logprobs=part.logprobs or None)
    if fin is None:
        return GenerateResponse(**fields, done=False)
    return GenerateResponse(**fields, done=True, done_reason=fin.done_reason, context=fin.context,
                            **_stats(fin, load_ns, total_ns))


def _generate_reply(parts: list[ReplyPart], last: GenerateResponse) -> GenerateResponse:
    whole = join_parts(parts)
    return last.model_copy(update={"response": whole.content, "thinking": whole.thinking or None,
                                   "logprobs": whole.logprobs or None})


def _chat_chunk(model: str, dropped: list[int], part: ReplyPart | None, fin: Finished | None, load_ns: int,
                total_ns: int) -> ChatResponse:
    part = part or ReplyPart()
    message = _chat_message(part)
    lps = part.logprobs or None
    if fin is None:
        return ChatResponse(model=model, created_at=now_rfc3339(), message=message, done=False, logprobs=lps)
    return ChatResponse(
        model=model, created_at=now_rfc3339(), message=message, done=True, done_reason=fin.done_reason,
        logprobs=lps, dropped_messages=dropped[0] or None, stop_sequence=fin.stop_sequence,
        **_stats(fin, load_ns, total_ns),
    )


def _chat_reply(parts: list[ReplyPart], last: ChatResponse) -> ChatResponse:
    whole = join_parts(parts)
    return last.model_copy(update={"message": _chat_message(whole), "logprobs": whole.logprobs or None})


def _column_cache_path() -> Path:
    from ..store.column_cache import default_path  # numpy and pandas: imported at the first scrape, not here

    return default_path()


def _last(statuses: Iterator[ProgressResponse]) -> ProgressResponse:
    """A non-streaming pull/push/create answers with its last progress message (Ollama's ``waitForStream``)."""
    last = ProgressResponse(status="success")
    for last in statuses:
        pass
    return last


__all__ = ["CANCEL_SCOPE", "DEFER_REPLY", "ChunkStream", "Engine", "Pending", "request_cancel_event"]
