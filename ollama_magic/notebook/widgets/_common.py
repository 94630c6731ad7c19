"""What the management panels share: a status line, background work, one-line errors, closing.

The kernel cannot process widget messages while a callback blocks its main thread, so anything that
may take a while (loading a model, importing a GGUF, a remote call) runs in a daemon thread that only
sets trait values when it is done (never ``with out:`` from a thread, which goes nowhere). Panels keep
the last worker thread so tests, and code that drives a panel, can ``wait()`` for it instead of
sleeping.
"""

from __future__ import annotations

import html
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable

import ipywidgets as widgets

from ...errors import OllamaMagicError
from ...names import ModelName

if TYPE_CHECKING:
    from ..session import NotebookSession

log = logging.getLogger("ollama_magic")

#: JupyterLab's theme variables, so a panel reads well in light and dark themes alike.
COLORS = {
    "info": "var(--jp-ui-font-color2)",
    "busy": "var(--jp-ui-font-color1)",
    "ok": "var(--jp-success-color1)",
    "warn": "var(--jp-warn-color1)",
    "error": "var(--jp-error-color1)",
}

#: One stylesheet for the tables rendered as text: columns line up only in the code font.
MONO_CLASS = "ollama-magic-mono"
MONO_STYLE = (
    f"<style>.{MONO_CLASS}, .{MONO_CLASS} select, .{MONO_CLASS} pre {{"
    " font-family: var(--jp-code-font-family); font-size: var(--jp-code-font-size);"
    " color: var(--jp-ui-font-color1); }</style>"
)


def error_text(exc: BaseException) -> str:
    """One line for the user. Our own errors and OS errors say what went wrong; anything else is a bug
    somewhere, so its traceback goes to the log while the panel shows only its type and message."""
    if isinstance(exc, (OllamaMagicError, OSError)):
        return str(exc)
    log.error("unexpected error in a panel", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def escape(text: Any) -> str:
    return html.escape("" if text is None else str(text))


def pre(text: str | None, empty: str = "(none)") -> str:
    """A block of text (a template, a Modelfile) as HTML that keeps its line breaks and wraps long lines."""
    if not text:
        return f'<i style="color: {COLORS["info"]}">{escape(empty)}</i>'
    return (f'<pre class="{MONO_CLASS}" style="white-space: pre-wrap; margin: 0; padding: 4px;'
            f' border: 1px solid var(--jp-border-color2); background: var(--jp-layout-color1)">'
            f"{escape(text)}</pre>")


class StatusLine:
    """An HTML line saying what happened last, coloured by kind with theme variables.

    ``text`` and ``kind`` keep the plain message so tests (and callers) need not parse HTML. With
    ``hide_when_empty`` the line takes no room until it has something to say (errors under fields).
    """

    def __init__(self, *, hide_when_empty: bool = False) -> None:
        self.hide_when_empty = hide_when_empty
        self.text = ""
        self.kind = "info"
        self.widget = widgets.HTML("")
        if hide_when_empty:
            self.widget.layout.display = "none"

    def show(self, text: str, kind: str = "info") -> None:
        self.text, self.kind = text, kind
        if not text:
            self.widget.value = ""
            if self.hide_when_empty:
                self.widget.layout.display = "none"
            return
        self.widget.value = f'<span style="color: {COLORS.get(kind, COLORS["info"])}">{escape(text)}</span>'
        if self.hide_when_empty:
            self.widget.layout.display = None

    def info(self, text: str) -> None:
        self.show(text, "info")

    def busy(self, text: str) -> None:
        self.show(text, "busy")

    def ok(self, text: str) -> None:
        self.show(text, "ok")

    def error(self, text: str) -> None:
        self.show(text, "error")

    def clear(self) -> None:
        self.show("")


def run_in_background(
    fn: Callable[[], Any],
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    *,
    name: str = "ollama-magic-panel",
) -> threading.Thread:
    """Run ``fn`` in a daemon thread, then ``on_done(result)`` or ``on_error(exc)`` in that thread.

    A daemon thread, so a forgotten job never keeps the kernel from shutting down. The callbacks run
    in the worker: they must only set trait values.
    """

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - reported in the panel, not lost in a thread
            if on_error is not None:
                on_error(exc)
            else:
                log.error("background job failed", exc_info=exc)
            return
        if on_done is not None:
            try:
                on_done(result)
            except BaseException as exc:  # noqa: BLE001
                if on_error is not None:
                    on_error(exc)
                else:
                    log.error("background job callback failed", exc_info=exc)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return thread


def close_tree(widget: widgets.Widget) -> None:
    """Close a widget and every widget below it: closing a box leaves its children's comms open."""
    for child in getattr(widget, "children", ()) or ():
        close_tree(child)
    widget.close()


def set_disabled(items: Iterable[widgets.Widget], disabled: bool) -> None:
    for item in items:
        item.disabled = disabled


class Panel:
    """Base of the panels: display delegation, one background job at a time, ``wait()`` and ``close()``.

    One job at a time because two concurrent changes to the same store from one panel (a delete while
    a copy runs) would leave a table that shows neither; the buttons in ``_busy_widgets`` are disabled
    while a job runs, so a second click cannot even start one.
    """

    widget: widgets.Box
    status: StatusLine

    def __init__(self) -> None:
        self.worker: threading.Thread | None = None
        self._busy_widgets: list[widgets.Widget] = []
        self._job_lock = threading.Lock()
        self._working = False
        self._closed = False

    # ---- display ---------------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ---- background work ----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True from the start of a job until its callbacks have run."""
        return self._working

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the last background job; True when none is running any more."""
        worker = self.worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def _run(
        self,
        what: str,
        fn: Callable[[], Any],
        on_done: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> threading.Thread | None:
        """Start ``fn`` as this panel's job, saying ``what`` meanwhile; None if a job is running."""
        with self._job_lock:
            if self._working:
                self.status.info("busy: wait for the current job to finish")
                return None
            self._working = True
        self.status.busy(what)
        set_disabled(self._busy_widgets, True)

        def finish(callback: Callable[[Any], None] | None, value: Any) -> None:
            try:
                if callback is not None:
                    callback(value)
            finally:
                self._working = False
                self._job_finished()

        def failed(exc: BaseException) -> None:
            finish(on_error or (lambda e: self.status.error(error_text(e))), exc)

        self.worker = run_in_background(fn, lambda result: finish(on_done, result), failed,
                                        name=f"ollama-magic: {what}")
        return self.worker

    def _job_finished(self) -> None:
        """Re-enable what ``_run`` disabled; panels whose buttons depend on a selection override it."""
        set_disabled(self._busy_widgets, False)

    # ---- life cycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every widget of the panel. A running job finishes on its own (a half-written model
        would be worse than a finished one nobody sees)."""
        self._closed = True
        close_tree(self.widget)


def matching_model(name: str | None, names: list[str]) -> str | None:
    """The entry of ``names`` that is model ``name`` (``all-minilm`` is ``all-minilm:latest``)."""
    if not name:
        return None
    if name in names:
        return name
    try:
        wanted = ModelName.parse(name).short
    except OllamaMagicError:
        return None
    for candidate in names:
        try:
            if ModelName.parse(candidate).short == wanted:
                return candidate
        except OllamaMagicError:
            continue
    return None


def model_choices(session: NotebookSession, current: str | None, default: str, status: "StatusLine") -> tuple[list[str], str]:
    """A model menu's entries and selection: the installed models, keeping ``current`` (else the
    session's ``default``). A model that is not installed stays listed, so using it says so clearly;
    a backend that does not answer is reported on ``status``, not raised."""
    current = current or default
    try:
        names = [m.model for m in session.backend.list().models]
    except Exception as exc:  # noqa: BLE001 - a server that does not answer is shown, not raised
        names = []
        status.error(f"cannot list the models: {error_text(exc)}")
    selected = matching_model(current, names) or matching_model(default, names)
    if selected is None:
        return [current, *names], current
    return names, selected


__all__ = ["COLORS", "MONO_CLASS", "MONO_STYLE", "Panel", "StatusLine", "close_tree", "error_text", "escape",
           "matching_model", "model_choices", "pre", "run_in_background", "set_disabled"]
