"""Showing a reply while it is being generated, and what the cell holds once it is done.

In a kernel, tokens go into one display that is updated in place, at most every ``interval`` seconds
(each update resends the whole text; too many trip Jupyter's IOPub rate limits). When the reply is
complete the live display is emptied and the reply becomes the cell's value: saved notebooks, static
viewers and nbval then see one ordinary result ("placeholder, then final"). In a terminal IPython the
tokens are printed as they come.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

FENCE = "```"


def thinking_block(thinking: str) -> str:
    """A model's trace as a collapsed ``<details>`` block, to sit above its answer."""
    if not thinking:
        return ""
    return f"<details><summary>Thinking</summary>\n\n{html.escape(thinking.strip())}\n\n</details>\n\n"


def renders_rich(shell: InteractiveShell) -> bool:
    """A Jupyter kernel, or output being captured (``%%capture``, tests): displays, not prints."""
    return type(shell).__name__ == "ZMQInteractiveShell" or \
        type(getattr(shell, "display_pub", None)).__name__ == "CapturingDisplayPublisher"


class _Markdown:
    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_markdown_(self) -> str:
        return self.text or " "  # some front ends reject empty Markdown

    def __repr__(self) -> str:
        return self.text


class StreamDisplay:
    """A live view of text that grows; ``finish()`` clears it so the final render appears once."""

    def __init__(self, shell: InteractiveShell, *, interval: float = 0.1, live: bool = True) -> None:
        self.rich = live and renders_rich(shell)
        self.printing = live and not self.rich
        self.interval = interval
        self.text = ""
        self.thinking = ""
        self._handle = None
        self._last = 0.0

    def append_thinking(self, piece: str) -> None:
        """The trace, shown collapsed above the answer (printed dimmed in a terminal)."""
        if not piece:
            return
        self.thinking += piece
        if self.printing:
            print(f"\x1b[2m{piece}\x1b[0m", end="", flush=True)
            return
        self._show()

    def append(self, piece: str) -> None:
        if not piece:
            return
        if self.printing and self.thinking and not self.text:
            print(flush=True)
        self.text += piece
        if self.printing:
            print(piece, end="", flush=True)
            return
        self._show()

    def _show(self) -> None:
        if not self.rich:
            return
        now = time.monotonic()
        body = thinking_block(self.thinking) + self.text
        if self._handle is None:
            from IPython.display import display

            self._handle = display(_Markdown(body), display_id=True)
            self._last = now
        elif now - self._last >= self.interval:
            self._handle.update(_Markdown(body))
            self._last = now

    def finish(self) -> None:
        if self._handle is not None:
            self._handle.update(_Markdown(""))
        if self.printing and self.text:
            print(flush=True)


class ChatReply(str):
    """The reply text (a ``str``, so ``reply.upper()`` and ``f"{reply}"`` work) that renders as
    Markdown, carrying what produced it."""

    model: str
    thread: str
    fmt: str
    interrupted: bool
    stats: dict[str, int]
    #: the model's thinking trace ("" when it gave none), shown collapsed above the answer
    thinking: str
    #: with ``--logprobs``: a DataFrame, one row per generated token (token, logprob, probability[, top])
    logprobs: Any
    #: with ``--docs``: a DataFrame of the chunks sent (n, cite, score, ...), shown as a collapsed list
    sources: Any = None

    def __new__(cls, text: str, *, model: str, thread: str, fmt: str = "markdown", interrupted: bool = False,
                stats: dict[str, int] | None = None, thinking: str = "", logprobs: Any = None) -> "ChatReply":
        reply = super().__new__(cls, text)
        reply.model, reply.thread, reply.fmt, reply.interrupted = model, thread, fmt, interrupted
        reply.stats = stats or {}
        reply.thinking = thinking
        reply.logprobs = logprobs
        return reply

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        # Only the metadata: the _repr_*_ methods below supply the data for each MIME type.
        from .output_forms import display_metadata

        return {}, display_metadata(self.model, self.thread)

    def _repr_html_(self) -> str | None:
        if self.fmt != "html":
            return None
        return str(self) + ("<p><em>[interrupted]</em></p>" if self.interrupted else "") + sources_html(self.sources)

    def _repr_latex_(self) -> str | None:
        if self.fmt != "math":
            return None
        from .output_forms import as_latex

        return as_latex(str(self))

    def _repr_markdown_(self) -> str:
        if self.fmt in ("html", "math"):
            return None  # type: ignore[return-value] - rendered as HTML / LaTeX instead
        if self.fmt == "code":
            body = f"{FENCE}\n{strip_fence(str(self))}\n{FENCE}"
        elif self.fmt == "text":
            return None  # type: ignore[return-value] - plain text only
        else:
            body = str(self) or " "
        if self.interrupted:
            body += "\n\n*[interrupted]*"
        return thinking_block(self.thinking) + body + sources_html(self.sources)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self) + ("\n[interrupted]" if self.interrupted else "") + sources_text(self.sources))


def sources_html(sources: Any) -> str:
    """``--docs``: the numbered sources as a collapsed ``<details>`` list below the answer."""
    if sources is None or not len(sources):
        return ""
    items = "".join(f"<li value=\"{n}\"><code>{html.escape(str(cite))}</code></li>"
                    for n, cite in zip(sources["n"], sources["cite"]))
    return f"\n\n<details><summary>sources ({len(sources)})</summary><ol>{items}</ol></details>\n"


def sources_text(sources: Any) -> str:
    if sources is None or not len(sources):
        return ""
    return "\n\nsources:\n" + "\n".join(f"[{n}] {cite}" for n, cite in zip(sources["n"], sources["cite"]))


class RenderedPrompt(str):
    """``%%chat --dry-run``: the exact text the model would read, shown verbatim."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_markdown_(self) -> str:
        return f"{FENCE}text\n{self}\n{FENCE}"


def strip_fence(text: str) -> str:
    """The code inside a reply that wrapped it in a Markdown fence (models often do)."""
    stripped = text.strip()
    if stripped.startswith(FENCE):
        first_newline = stripped.find("\n")
        stripped = stripped[first_newline + 1:] if first_newline >= 0 else ""
        if stripped.rstrip().endswith(FENCE):
            stripped = stripped.rstrip()[: -len(FENCE)]
    return stripped.strip("\n")
