"""The chat panel: ``%%chat`` with a text box instead of a cell.

The panel only collects fields and shows results; each turn goes through
:func:`ollama_magic.notebook.chat.chat_turn`, the same call the magic makes, so the panel and the
magic share the notebook's threads (``ConversationStore``), the context guard and the way a stopped
reply is kept (marked interrupted).

A turn runs in a background thread: while a cell runs, the kernel handles no widget messages, so a
turn on the kernel's main thread would freeze the Stop button it needs. The worker only sets trait
values (which ipywidgets sends from any thread); it never uses ``with output:`` or ``display``,
whose output would land in whichever cell happens to be running.

No Ctrl+Enter: ipywidgets 8 has no keyboard events, and a ``Textarea`` only ever syncs its value
(``continuous_update=False`` syncs on blur, not on a key). The honest keyboard route is Tab from the
message box to Send, then Enter or Space.

The HTML it generates uses JupyterLab's CSS variables (with neutral fallbacks), never fixed colours,
so light and dark themes both read well.
"""

from __future__ import annotations

import contextlib
import functools
import html
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import ipywidgets as widgets

from ...errors import InvalidRequest, OllamaMagicError
from ..chat import ChatTurn, chat_turn
from ..conversations import DEFAULT_THREAD, check_thread_name
from ._common import Panel, StatusLine, error_text, model_choices

if TYPE_CHECKING:
    from ..session import NotebookSession

log = logging.getLogger("ollama_magic")

#: Seconds between live updates of a growing reply (~10/s): each update resends the whole reply.
UPDATE_INTERVAL = 0.1
#: How long ``close()`` waits for a stopped turn to hand the model back.
CLOSE_TIMEOUT = 10.0

# Scoped to .om-chat; the HTML widget puts this <style> in the page, so it must never leak out.
_STYLE = """<style>
.om-chat { color: var(--jp-ui-font-color1, inherit); font-family: var(--jp-content-font-family, inherit);
           font-size: var(--jp-content-font-size1, inherit); line-height: 1.45; }
.om-chat .om-msg { border-left: 3px solid var(--jp-border-color2, currentColor); padding: 2px 10px;
                   margin: 6px 0; background: var(--jp-layout-color1, transparent); }
.om-chat .om-user { border-left-color: var(--jp-brand-color1, currentColor); }
.om-chat .om-role { color: var(--jp-ui-font-color2, inherit); font-size: var(--jp-ui-font-size0, smaller);
                    font-weight: 600; }
.om-chat .om-empty { color: var(--jp-ui-font-color2, inherit); font-style: italic; }
.om-chat pre { background: var(--jp-layout-color2, transparent); color: var(--jp-content-font-color1, inherit);
               border: 1px solid var(--jp-border-color2, currentColor); padding: 6px 8px; overflow-x: auto; }
.om-chat code { font-family: var(--jp-code-font-family, monospace); }
.om-chat table { border-collapse: collapse; }
.om-chat th, .om-chat td { border: 1px solid var(--jp-border-color2, currentColor); padding: 2px 6px; }
.om-chat p { margin: 4px 0; }
.om-chat details.om-thinking { color: var(--jp-ui-font-color2, inherit); margin: 2px 0 4px; }
.om-scroll { max-height: 420px; overflow-y: auto; display: flex; flex-direction: column-reverse; }
</style>"""


# ---- HTML ------------------------------------------------------------------------------------------


def markdown_html(text: str) -> str:
    """``text`` (Markdown) as HTML, with any raw HTML in it escaped: a model's reply is data, not markup.

    Uses markdown-it-py (CommonMark plus tables and strikethrough); without it the text is shown as
    escaped, pre-wrapped plain text, so the panel still works.
    """
    renderer = _markdown_renderer()
    if renderer is None:
        return f'<pre style="white-space: pre-wrap">{html.escape(text)}</pre>'
    return renderer.render(text)


@functools.lru_cache(maxsize=1)
def _markdown_renderer() -> Any:
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # pragma: no cover - markdown-it-py comes with rich (which typer pulls in)
        return None
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def _role_label(message: Mapping[str, Any]) -> str:
    role = message.get("role")
    if role == "user":
        label = "You"
    elif role == "system":
        label = "System"
    else:
        label = message.get("model") or "assistant"
    if message.get("interrupted"):
        label += " · interrupted"
    return label


def thinking_html(thinking: str) -> str:
    """A recorded trace, collapsed above its answer (as ``%%chat --think`` shows it)."""
    if not thinking:
        return ""
    return f'<details class="om-thinking"><summary>Thinking</summary>{markdown_html(thinking.strip())}</details>'


def message_html(message: Mapping[str, Any]) -> str:
    """One message as a block: who said it, its thinking trace collapsed, then its content rendered
    from Markdown."""
    css = "om-msg om-user" if message.get("role") == "user" else "om-msg"
    count = len(message.get("images") or [])
    images = f'<div class="om-role">with {count} image{"s" if count > 1 else ""}</div>' if count else ""
    return (f'<div class="{css}"><div class="om-role">{html.escape(_role_label(message))}</div>'
            f'{thinking_html(message.get("thinking") or "")}{markdown_html(message.get("content") or "")}'
            f'{images}</div>')


def conversation_html(messages: Iterable[Mapping[str, Any]], *, thread: str = DEFAULT_THREAD) -> str:
    """A thread as one scrollable block that starts scrolled to its end (newest message in view)."""
    blocks = "".join(message_html(m) for m in messages)
    if not blocks:
        blocks = f'<div class="om-empty">No messages in thread {html.escape(thread)} yet.</div>'
    # column-reverse on the scroller keeps the bottom in view without any JavaScript
    return f'{_STYLE}<div class="om-chat om-scroll"><div>{blocks}</div></div>'


def reply_html(text: str, *, model: str) -> str:
    """The reply while it grows (empty text: nothing)."""
    if not text:
        return ""
    return f'{_STYLE}<div class="om-chat">{message_html({"role": "assistant", "content": text, "model": model})}</div>'


def trace_html(thinking: str) -> str:
    """The thinking trace while it grows, for the collapsed Thinking area above the reply."""
    if not thinking:
        return ""
    return f'{_STYLE}<div class="om-chat">{markdown_html(thinking)}</div>'


#: The panel's think menu: label -> Ollama's ``think`` ("default": the model's own rule)
THINK_CHOICES: dict[str, bool | str | None] = {"default": None, "on": True, "off": False, "low": "low",
                                               "medium": "medium", "high": "high", "max": "max"}


# ---- options ---------------------------------------------------------------------------------------


def parse_options(temperature: str, seed: str, num_predict: str) -> dict[str, Any]:
    """Ollama options from the panel's text boxes; an empty box leaves the model's own setting."""
    options: dict[str, Any] = {}
    fields: list[tuple[str, str, Callable[[str], Any]]] = [
        ("temperature", temperature, float), ("seed", seed, int), ("num_predict", num_predict, int),
    ]
    for name, raw, kind in fields:
        raw = raw.strip()
        if not raw:
            continue
        try:
            options[name] = kind(raw)
        except ValueError:
            what = "a number" if kind is float else "an integer"
            raise InvalidRequest(f"{name} must be {what}, not {raw!r}") from None
    return options


# ---- the view chat_turn streams into ---------------------------------------------------------------


class _WidgetView:
    """``chat_turn``'s ``ReplyView``: renders the growing reply (and its thinking trace, which
    ``chat_turn`` hands to ``append_thinking``) into the panel, at most every ``interval`` seconds
    (the first piece at once), and always once more at the end."""

    def __init__(self, show: Callable[[str, str, int], None], interval: float = UPDATE_INTERVAL) -> None:
        self.text = ""
        self.thinking = ""
        self.pieces = 0
        self._show = show
        self._interval = interval
        self._last = float("-inf")

    def append(self, piece: str) -> None:
        if piece:
            self.text += piece
            self._grew()

    def append_thinking(self, piece: str) -> None:
        if piece:
            self.thinking += piece
            self._grew()

    def _grew(self) -> None:
        self.pieces += 1
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._show(self.text, self.thinking, self.pieces)

    def finish(self) -> None:
        self._show(self.text, self.thinking, self.pieces)


# ---- the panel -------------------------------------------------------------------------------------


class ChatPanel(Panel):
    """Chat with a model in one of this notebook's threads (the same threads as ``%%chat``).

    Parameters
    ----------
    session:
        The kernel's ``NotebookSession`` (``ollama_magic.notebook.current_session()``): its backend
        answers, its ``chat_model`` is the default, its conversations hold the threads.

    Notes
    -----
    Unlike ``%%chat``, the message is sent as typed: ``{name}`` is not filled in from notebook
    variables (pasted code is full of braces). Enter makes a new line; there is no Ctrl+Enter (see the
    module docstring), so press Send or Tab to it and press Enter.
    """

    def __init__(self, session: NotebookSession) -> None:
        super().__init__()
        self.session = session
        self._stop = threading.Event()
        self._quiet = False  # set while options are rebuilt, so observers do not re-render
        self._new_threads: list[str] = []  # named here but without a message yet

        self.status = StatusLine()
        self.model = widgets.Dropdown(description="Model", layout=widgets.Layout(width="auto"))
        self.thread = widgets.Dropdown(description="Thread", layout=widgets.Layout(width="auto"))
        self.new_thread = widgets.Text(placeholder="new thread name", continuous_update=False,
                                       layout=widgets.Layout(width="180px"))
        self.new_thread_button = widgets.Button(description="New thread", tooltip="Start an empty thread")
        self.history = widgets.HTML(layout=widgets.Layout(width="100%"))
        # the trace of a thinking model, live while it streams, collapsed unless opened (as %%chat --think)
        self.trace = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.trace_box = widgets.Accordion(children=[self.trace], titles=("Thinking",), selected_index=None,
                                           layout=widgets.Layout(width="100%", display="none"))
        self.reply = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.message = widgets.Textarea(placeholder="Message (Enter makes a new line; press Send)", rows=3,
                                        layout=widgets.Layout(width="100%"))
        self.send_button = widgets.Button(description="Send", button_style="primary", icon="paper-plane",
                                          tooltip="Send the message")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True,
                                          tooltip="Stop generating; the partial reply is kept")
        self.reset_button = widgets.Button(description="Reset thread", icon="trash",
                                           tooltip="Forget every message of this thread")
        self.images = widgets.FileUpload(accept="image/*", multiple=True, description="Images",
                                         tooltip="Images to send with the next message (a vision model reads them)")
        labelled = {"description_width": "initial"}  # "num_predict" must not be cut to "num_pred…"
        self.system = widgets.Text(description="system", placeholder="(keep the thread's)", style=labelled,
                                   layout=widgets.Layout(width="100%"))
        self.temperature = widgets.Text(description="temperature", placeholder="model default", style=labelled,
                                        layout=widgets.Layout(width="220px"))
        self.seed = widgets.Text(description="seed", placeholder="random", style=labelled,
                                 layout=widgets.Layout(width="180px"))
        self.num_predict = widgets.Text(description="num_predict", placeholder="model default", style=labelled,
                                        layout=widgets.Layout(width="220px"))
        self.think = widgets.Dropdown(description="think", options=list(THINK_CHOICES), value="default",
                                      style=labelled, layout=widgets.Layout(width="180px"))
        self.options = widgets.Accordion(
            children=[widgets.VBox([widgets.HBox([self.temperature, self.seed, self.num_predict, self.think]),
                                    self.system])],
            titles=("Options",),
        )
        self.widget = widgets.VBox([
            widgets.HBox([self.model, self.thread, self.new_thread, self.new_thread_button]),
            self.history,
            self.trace_box,
            self.reply,
            self.status.widget,
            self.message,
            widgets.HBox([self.send_button, self.stop_button, self.reset_button, self.images]),
            self.options,
        ])
        # disabled while a turn runs (Panel._run); Stop is the one button enabled only then
        self._busy_widgets = [self.send_button, self.reset_button, self.model, self.thread, self.new_thread,
                              self.new_thread_button, self.images]

        self.send_button.on_click(lambda _: self.send())
        self.stop_button.on_click(lambda _: self.stop())
        self.reset_button.on_click(lambda _: self.reset())
        self.new_thread_button.on_click(lambda _: self.start_thread(self.new_thread.value))
        self.new_thread.observe(self._on_new_thread_name, names="value")
        self.thread.observe(self._on_thread, names="value")
        self.refresh()

    # ---- state -------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the installed models and this notebook's threads (e.g. after ``%%chat`` or a create)."""
        self.refresh_models()
        self.refresh_threads()
        self.show_history()

    def refresh_models(self) -> None:
        """The model list from the backend, keeping the selection (default: the session's chat model)."""
        names, selected = model_choices(self.session, self.model.value, self.session.chat_model, self.status)
        with self._quietly():
            self.model.options = names
            self.model.value = selected

    def refresh_threads(self) -> None:
        """The thread list from the conversation store, with message counts, keeping the selection."""
        current = self.thread.value or DEFAULT_THREAD
        counts = self.session.conversations.threads(self.session.identity)
        names = list(counts)
        for extra in (DEFAULT_THREAD, *self._new_threads, current):
            if extra not in names:
                names.append(extra)
        with self._quietly():
            self.thread.options = [(f"{name} ({counts.get(name, 0)})", name) for name in names]
            self.thread.value = current

    def show_history(self, pending: str | None = None) -> None:
        """Render the selected thread; ``pending`` is a message sent but not yet recorded."""
        name = self.thread.value or DEFAULT_THREAD
        messages = list(self.session.conversations.thread(self.session.identity, name))
        if pending is not None:
            messages.append({"role": "user", "content": pending})
        self.history.value = conversation_html(messages, thread=name)

    def show_trace(self, thinking: str, *, live: bool = False) -> None:
        """The growing trace in the collapsed Thinking area (hidden when there is none); its title says
        whether the model is still thinking."""
        self.trace_box.layout.display = None if thinking else "none"
        self.trace_box.set_title(0, f"Thinking… ({len(thinking.split())} words)" if live else "Thinking")
        self.trace.value = trace_html(thinking)

    # ---- actions -----------------------------------------------------------------------------------

    def send(self, text: str | None = None) -> bool:
        """Send ``text`` (default: the message box) as one ``chat_turn`` in a background thread;
        False if nothing was started.

        Problems found before anything is sent (empty message, bad option) are shown in the status
        line at once; problems of the turn itself (unknown model, ...) once the worker meets them.
        """
        if self.busy or self._closed:
            return False
        text = self.message.value if text is None else text
        if not text.strip():
            self.status.error("nothing to say: write a message first")
            return False
        try:
            options = parse_options(self.temperature.value, self.seed.value, self.num_predict.value)
        except OllamaMagicError as exc:
            self.status.error(str(exc))
            return False
        images = [bytes(upload["content"]) for upload in self.images.value]  # sent once, kept by the thread
        turn = ChatTurn(text=text, model=self.model.value, thread=self.thread.value or DEFAULT_THREAD,
                        system=self.system.value.strip() or None, options=options,
                        think=THINK_CHOICES[self.think.value], images=images)
        stop = self._stop = threading.Event()
        started = time.monotonic()

        def show(reply_text: str, thinking: str, pieces: int) -> None:
            self.show_trace(thinking, live=not reply_text)
            self.reply.value = reply_html(reply_text, model=turn.model)
            if not stop.is_set():
                doing = "thinking" if thinking and not reply_text else "answering"
                self.status.busy(f"{turn.model} is {doing} in thread {turn.thread!r}… ({pieces} tokens)")

        def done(reply: Any) -> None:
            self.reply.value = ""
            self.show_trace("")
            self.show_history()
            line = _done_line(reply, time.monotonic() - started)
            if reply.interrupted:  # what the user asked for, not a success to celebrate
                self.status.info(line)
            else:
                self.status.ok(line)

        def failed(exc: BaseException) -> None:
            if not self.message.value:
                self.message.value = turn.text  # give the message back: nothing typed is lost
            self.reply.value = ""
            self.show_trace("")
            self.status.error(error_text(exc))
            try:
                self.show_history()
            except Exception:  # noqa: BLE001 - the first error is the one to show
                log.debug("chat panel could not re-render the thread", exc_info=True)

        self.message.value = ""
        self.images.value = ()
        self.reply.value = ""
        self.show_history(pending=text)
        self.stop_button.disabled = False
        worker = self._run(f"waiting for {turn.model}…",
                           lambda: chat_turn(self.session, turn, view=_WidgetView(show), stop=stop,
                                             notice=self.status.busy), done, failed)
        if worker is None:  # another job got there first
            self.stop_button.disabled = True
            self.message.value = text
            return False
        return True

    def stop(self) -> None:
        """End the running turn after the current token; the partial reply is kept, marked interrupted."""
        if self.busy:
            self._stop.set()
            self.stop_button.disabled = True
            self.status.busy("stopping…")

    def reset(self) -> int:
        """Forget every message of the selected thread; returns how many there were."""
        if self.busy:
            self.status.error("wait for the reply (or press Stop) before resetting the thread")
            return 0
        name = self.thread.value or DEFAULT_THREAD
        try:
            count = self.session.conversations.reset(self.session.identity, name)
        except OllamaMagicError as exc:
            self.status.error(str(exc))
            return 0
        self.reply.value = ""
        self.refresh_threads()
        self.show_history()
        self.status.ok(f"thread {name!r} emptied ({count} message{'s' if count != 1 else ''} forgotten)")
        return count

    def start_thread(self, name: str) -> bool:
        """Select thread ``name``, adding it to the list (it is stored with its first message)."""
        name = name.strip()
        if not name or self.busy:
            return False
        try:
            check_thread_name(name)
        except InvalidRequest as exc:
            self.status.error(str(exc))
            return False
        if name not in self._new_threads:
            self._new_threads.append(name)
        self.refresh_threads()
        self.thread.value = name  # the observer renders its history
        self.new_thread.value = ""
        return True

    def close(self) -> None:
        """Stop a running turn, wait for it to hand the model back, then close the widgets."""
        self._stop.set()
        self.wait(CLOSE_TIMEOUT)
        super().close()

    # ---- helpers -----------------------------------------------------------------------------------

    def _job_finished(self) -> None:
        try:
            self.refresh_threads()  # the counts changed
        except Exception as exc:  # noqa: BLE001 - the panel must become usable again regardless
            self.status.error(error_text(exc))
        self.stop_button.disabled = True
        super()._job_finished()

    def _on_thread(self, change: Mapping[str, Any]) -> None:
        if not self._quiet and not self.busy:
            self.reply.value = ""
            self.show_history()
            self.status.clear()

    def _on_new_thread_name(self, change: Mapping[str, Any]) -> None:
        if change["new"].strip():  # Enter (or leaving the box) in the name field starts the thread
            self.start_thread(change["new"])

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False


def _done_line(reply: Any, seconds: float) -> str:
    if getattr(reply, "interrupted", False):
        return f"stopped: the partial reply is kept in thread {reply.thread!r}, marked interrupted"
    stats = getattr(reply, "stats", {}) or {}
    tokens = stats.get("eval_count")
    total = stats.get("total_duration")
    took = total / 1e9 if total else seconds
    line = f"{reply.model} · thread {reply.thread!r}"
    if tokens:
        line += f" · {tokens} tokens in {took:.1f} s ({tokens / took:.1f} tokens/s)" if took > 0 else f" · {tokens} tokens"
    return line


__all__ = ["ChatPanel", "conversation_html", "markdown_html", "message_html", "parse_options",
           "reply_html", "thinking_html", "trace_html"]
