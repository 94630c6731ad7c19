"""The notebook's context guard: what a turn's thread loses to fit the model's context, said before it goes.

The fitting is the engine's, for every front end (``engine/context_window.py``: Ollama's ``chatPrompt``
with the model's own tokenizer, whole turns, never the system message or the question). The guard
only asks the backend what that fitting will leave out (``Backend.fit_context``: the in-kernel engine,
or an ollama-magic server through ``_debug_render_only``), sends the whole thread, and ``%%chat`` says
"left out the N oldest message(s)".

A server that cannot say (Ollama, which fits but does not report it; an OpenAI-compatible server)
gets a documented estimate instead: :data:`CHARS_PER_TOKEN` characters per token against the
request's ``num_ctx`` (else Ollama's 4096), keeping the engine's room for the answer, by the engine's
turn rule; only the kept messages are sent then, so the note is true of what left the notebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..engine.context_window import ContextWindow, fit_messages
from ..options import OPTION_DEFAULTS
from ..types import ContextFit

#: A deliberately pessimistic guess of characters per token (English averages ~4; code and other
#: languages less), used only for servers that cannot count.
CHARS_PER_TOKEN = 3


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(m.get("content") or "") // CHARS_PER_TOKEN + 4 for m in messages)


def context_length(options: Mapping[str, Any]) -> int:
    """The context the request asks for, else Ollama's default."""
    return int(options.get("num_ctx") or OPTION_DEFAULTS["num_ctx"])


@dataclass
class GuardedThread:
    """What to send for a turn, and how it fits (``estimated``: by characters, not by the server)."""

    messages: list[dict[str, Any]]
    fit: ContextFit
    estimated: bool = False


def guard_thread(backend: Any, model: str, messages: list[dict[str, Any]], options: Mapping[str, Any],
                 **chat_fields: Any) -> GuardedThread:
    """``messages`` as the backend's fitting will treat them; ``chat_fields`` (``think``, ``format``)
    are the chat's own, since they change the prompt."""
    fit_context = getattr(backend, "fit_context", None)
    fields = {k: v for k, v in chat_fields.items() if v is not None}
    fit = fit_context(model, messages, options=dict(options) or None, **fields) if callable(fit_context) else None
    if fit is not None:
        return GuardedThread(list(messages), fit)
    window = ContextWindow(num_ctx=context_length(options), num_predict=int(options.get("num_predict") or -1))
    kept, dropped = fit_messages(messages, estimate_tokens, window.history_budget)
    return GuardedThread(kept, ContextFit(num_ctx=window.num_ctx, dropped_messages=dropped), estimated=True)


__all__ = ["CHARS_PER_TOKEN", "GuardedThread", "context_length", "estimate_tokens", "guard_thread"]
