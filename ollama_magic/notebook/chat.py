"""One ``%%chat`` turn: fill in notebook variables, send the thread's history with the new message,
stream the reply, record both in the notebook's thread. Ctrl-C keeps what was generated so far.

The magic only parses flags and the widgets only collect fields: both call ``chat_turn``.
"""

from __future__ import annotations

import json
import string
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from ..errors import InvalidRequest
from ..types import ContextFit
from .context_fit import fit_note, guard_thread, loaded_context_length, model_context_length, reports_fit
from .conversations import as_chat_messages, new_message
from .display import ChatReply, RenderedPrompt, StreamDisplay, strip_fence
from .output_forms import with_instruction

if TYPE_CHECKING:
    from .session import NotebookSession

FORMATS = ("markdown", "text", "code", "json", "html", "math")


class _Namespace(dict):
    def __init__(self, namespace: Mapping[str, Any]) -> None:
        super().__init__()
        self.namespace = namespace

    def __missing__(self, key: str) -> Any:
        if key in self.namespace:
            return self.namespace[key]
        raise InvalidRequest(f"{{{key}}} in the message: no variable named {key!r} in the notebook "
                             "(write {{ and }} for literal braces)")


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """``{name}`` (with attribute, index and format spec: ``{df.shape}``, ``{x:.2f}``) becomes the
    variable's value; ``{{``/``}}`` are literal braces. Anything wrong is one clear error, before
    anything is sent."""
    try:
        return string.Formatter().vformat(text, (), _Namespace(namespace))
    except InvalidRequest:
        raise
    except (ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
        raise InvalidRequest(f"cannot fill in the message's {{...}} fields: {exc} "
                             "(write {{ and }} for literal braces)") from None


@dataclass
class ChatTurn:
    """What one turn asks for; ``options`` are Ollama's model options; ``schema`` (a JSON schema, with
    ``fmt="json"``) constrains the reply to that shape."""

    text: str
    model: str
    thread: str = "main"
    system: str | None = None
    fmt: str = "markdown"
    history: bool = True
    new: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    #: Ollama's ``think``: None (the model's default), True/False or a level ("low" ... "max")
    think: bool | str | None = None
    #: only render the prompt the model would see (Ollama's ``_debug_render_only``); nothing is recorded
    dry_run: bool = False
    #: Send at most this many earlier exchanges of the thread (None: as many as fit the context).
    max_history: int | None = None
    #: Notebook functions the model may call (``--tools``); "required" forces a first call by grammar.
    tools: list[Callable[..., Any]] = field(default_factory=list)
    tool_choice: str = "auto"
    #: ``--confirm``: asked before each tool call runs (False skips it)
    confirm: Callable[[str], bool] | None = None
    #: ``--logprobs [N]``: the reply's token probabilities, with N likeliest alternatives (None: off)
    logprobs: int | None = None
    #: Images sent with the message (paths, bytes, PIL images, matplotlib figures, base64 text); the
    #: thread keeps them by digest, in files beside its JSON.
    images: list[Any] = field(default_factory=list)


def last_exchanges(messages: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The system messages and the last ``count`` exchanges (a user message and what followed it)."""
    starts = [i for i, m in enumerate(messages) if m["role"] == "user"]
    cut = starts[-count] if 0 < count <= len(starts) else (len(messages) if count <= 0 else 0)
    return [m for i, m in enumerate(messages) if m["role"] == "system" or i >= cut]


class ReplyView(Protocol):
    """Where a reply is shown while it grows: the cell's output (StreamDisplay) or a widget."""

    text: str

    def append(self, piece: str) -> None: ...
    def finish(self) -> None: ...


def chat_turn(session: NotebookSession, turn: ChatTurn, *, live: bool = True, notice: Callable[[str], None] | None = None,
              view: ReplyView | None = None, stop: threading.Event | None = None,
              interval: float = 0.1, confirm: Callable[[str], bool] | None = None) -> ChatReply | Any:
    """Run one turn and return the reply (``fmt="json"``: the parsed object).

    ``view`` replaces the cell-output display (the chat panel passes its own); setting ``stop`` from
    another thread ends the turn after the current token, like Ctrl-C does in a cell. ``interval``:
    seconds between live updates of the cell-output display."""
    if turn.fmt not in FORMATS:
        raise InvalidRequest(f"unknown format {turn.fmt!r}: use one of {', '.join(FORMATS)}")
    if turn.schema is not None and turn.fmt != "json":
        raise InvalidRequest("a schema shapes a JSON reply: use it with -f json")
    store, identity = session.conversations, session.identity
    # read once; --new and --system are applied in memory here and written with the turn (one write)
    earlier = store.thread(identity, turn.thread) if turn.history and not turn.new else []
    if turn.system is not None:
        earlier = [{"role": "system", "content": turn.system}, *(m for m in earlier if m["role"] != "system")]
    if turn.max_history is not None:
        earlier = last_exchanges(earlier, turn.max_history)
    user = new_message("user", with_instruction(turn.text, turn.fmt), turn.model)
    fresh = _images_of(turn)
    if fresh:
        user["images"] = [digest for digest, _ in fresh]
    new_images = dict(fresh)

    session.prepare(turn.model, notice or (lambda _line: None))
    extra: dict[str, Any] = {"think": turn.think} if turn.think is not None else {}
    reply_format = (turn.schema or "json") if turn.fmt == "json" else None
    thread_messages = as_chat_messages([*earlier, user], lambda d: new_images.get(d) or store.load_image(identity, d))
    backend = session.backend
    say = notice or (lambda _line: None)
    # The in-kernel engine fits the thread as it runs and says what it left out in the final chunk: its
    # prompt is rendered once. Any other backend is asked first (or estimated), and told only what fits.
    after = reports_fit(backend)
    sent = thread_messages
    if not after:
        guarded = guard_thread(backend, turn.model, thread_messages, turn.options, format=reply_format, **extra)
        sent = guarded.messages
        if note := fit_note(turn.thread, guarded.fit):
            say(note)
    if turn.dry_run:
        rendered = backend.chat(turn.model, sent, options=turn.options or None, debug_render_only=True,
                                format=reply_format, **extra)
        fit = rendered.debug_info.context_fit if rendered.debug_info else None
        if after and fit is not None and (note := fit_note(turn.thread, fit)):
            say(note)
        return RenderedPrompt(rendered.debug_info.rendered_template if rendered.debug_info else "")
    view = view if view is not None else StreamDisplay(session.shell, interval=interval, live=live)
    probs: list[Any] | None = None
    if turn.tools:
        final, interrupted, thinking = _tool_rounds(session, turn, sent, view, confirm or turn.confirm), False, ""
    else:
        if turn.logprobs is not None:
            probs = []
            extra.update(logprobs=True, top_logprobs=turn.logprobs)
        final, interrupted, thinking = _streamed(session, turn, sent, view, stop, dict(extra, format=reply_format),
                                                 probs)

    if after and final is not None and getattr(final, "dropped_messages", None):
        num_ctx = loaded_context_length(backend, turn.model) or model_context_length(backend, turn.model, turn.options)
        say(fit_note(turn.thread, ContextFit(num_ctx=num_ctx, dropped_messages=final.dropped_messages)) or "")

    stats = {k: int(getattr(final, k) or 0) for k in ("total_duration", "prompt_eval_count", "eval_count")} if final else {}
    reply = ChatReply(view.text, model=turn.model, thread=turn.thread, fmt=turn.fmt, interrupted=interrupted,
                      stats=stats, thinking=thinking, logprobs=_frame(probs))
    if turn.history:
        reply_message = new_message("assistant", view.text, turn.model, interrupted=interrupted, **stats)
        if thinking:
            reply_message["thinking"] = thinking  # sent back to the template with the thread's next turns
        for data in new_images.values():
            store.save_image(identity, data)
        store.record_turn(identity, turn.thread, [user, reply_message], system=turn.system, reset=turn.new)
    if turn.fmt == "json" and not interrupted:
        try:
            return json.loads(strip_fence(view.text))
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"the reply is not valid JSON ({exc}); it is kept in thread {turn.thread!r}") from None
    return reply


def _frame(probs: list[Any] | None) -> Any:
    if probs is None:
        return None
    from .logprobs import logprob_frame

    return logprob_frame(probs)


def _images_of(turn: ChatTurn) -> list[tuple[str, bytes]]:
    """The turn's images as (digest, file bytes), read now so a bad one is an error before anything runs."""
    if not turn.images:
        return []
    import hashlib

    from ..engine.images import image_bytes

    files = [image_bytes(value) for value in turn.images]
    return [("sha256:" + hashlib.sha256(data).hexdigest(), data) for data in files]


def _streamed(session: NotebookSession, turn: ChatTurn, sent: list[dict[str, Any]], view: ReplyView,
              stop: threading.Event | None, extra: Mapping[str, Any],
              probs: list[Any] | None = None) -> tuple[Any, bool, str]:
    """Stream the reply into ``view``; the final chunk, whether it was interrupted, and the thinking
    trace. ``probs`` collects the chunks' token log probabilities.

    ``stop`` is also the in-kernel engine's cancel event for this generation (``CANCEL_SCOPE``), so Stop
    lands within a decode step even before the first token: while the job waits for a slot or its long
    prompt is evaluated. A remote backend sees it only between chunks (its HTTP stream cannot be closed
    from another thread while it is being read)."""
    from ..engine.delivery import CANCEL_SCOPE  # here: it loads llama.cpp, which a remote backend needs not

    scope = CANCEL_SCOPE.set(stop) if stop is not None else None
    try:
        stream = session.backend.chat(turn.model, sent, stream=True, options=turn.options or None, **extra)
    finally:
        if scope is not None:
            CANCEL_SCOPE.reset(scope)
    final, interrupted = None, False
    trace: list[str] = []
    show_trace = getattr(view, "append_thinking", None)
    try:
        for chunk in stream:
            thinking = getattr(chunk.message, "thinking", None) or ""
            if thinking:
                trace.append(thinking)
                if show_trace is not None:
                    show_trace(thinking)
            view.append(chunk.message.content or "")
            if probs is not None:
                probs.extend(getattr(chunk, "logprobs", None) or [])
            if chunk.done:
                final = chunk
                interrupted = stop is not None and stop.is_set()  # the engine ended it early for Stop
            elif stop is not None and stop.is_set():
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stream.close()  # stops decoding now if we left early (Ctrl-C, an error)
        view.finish()
    return final, interrupted, "".join(trace)


def _tool_rounds(session: NotebookSession, turn: ChatTurn, sent: list[dict[str, Any]], view: ReplyView,
                 confirm: Callable[[str], bool] | None) -> Any:
    """Tool calls are whole JSON objects, so these rounds are not streamed; each call is shown."""
    from IPython.display import display

    from .tools import run_with_tools

    try:
        final, _ = run_with_tools(session.backend, turn.model, sent, turn.tools, options=turn.options or None,
                                  confirm=confirm, show=display, tool_choice=turn.tool_choice)
        view.append(final.message.content or "")
    finally:
        view.finish()
    return final
