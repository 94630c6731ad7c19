"""The notebook's context guard: what a turn's thread loses to fit the model's context, said with the turn.

The fitting is the engine's, for every front end (``engine/context_window.py``: Ollama's ``chatPrompt``
with the model's own tokenizer, whole turns, never the system message or the question). The guard
reads what that fitting left out and ``%%chat`` says "left out the N oldest message(s)". The in-kernel
engine says so in the reply's final chunk (``dropped_messages``), so its turn renders the prompt once;
a server is asked before the turn (``Backend.fit_context``: an ollama-magic server answers through
``_debug_render_only``), and the whole thread is sent.

A server that cannot say (Ollama, which fits but does not report it; an OpenAI-compatible server)
gets a documented estimate instead: :data:`CHARS_PER_TOKEN` characters per token against the
request's ``num_ctx`` (else Ollama's 4096), keeping the engine's room for the answer, by the engine's
turn rule; only the kept messages are sent then, so the note is true of what left the notebook.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from ..engine.context_window import ContextWindow, fit_messages
from ..options import OPTION_DEFAULTS
from ..types import ContextFit

if TYPE_CHECKING:
    from ..backends import Backend

#: A deliberately pessimistic guess of characters per token (English averages ~4; code and other
#: languages less), used only for servers that cannot count.
CHARS_PER_TOKEN = 3


def guess_tokens(text: str) -> int:
    """The one chars/token guess, for servers that cannot count (and the notebook context they get)."""
    return len(text) // CHARS_PER_TOKEN + 1


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(guess_tokens(m.get("content") or "") + 3 for m in messages)


def context_length(options: Mapping[str, Any]) -> int:
    """The context the request asks for, else Ollama's default."""
    return int(options.get("num_ctx") or OPTION_DEFAULTS["num_ctx"])


def model_context_length(backend: Backend, model: str, options: Mapping[str, Any]) -> int:
    """The context a chat with ``options`` gets, by the backend's own rule (the engine's: the request's
    or the Modelfile's num_ctx, capped at the trained context), from its fit result; a server that
    cannot say gets the request's num_ctx, else Ollama's default."""
    fit_context = getattr(backend, "fit_context", None)
    probe = [{"role": "user", "content": ""}]
    fit = fit_context(model, probe, options=dict(options) or None) if callable(fit_context) else None
    return fit.num_ctx if fit is not None else context_length(options)


def loaded_context_length(backend: Backend, model: str) -> int | None:
    """The context of ``model`` as loaded now (``ps``), after a turn ran it; None when it is not loaded."""
    from ..names import ModelName

    name = ModelName.parse(model).short
    try:
        running = backend.ps().models
    except Exception:  # noqa: BLE001 - a server that cannot say (OpenAI's API)
        return None
    for entry in running:
        if ModelName.parse(entry.model).short == name and getattr(entry, "context_length", None):
            return int(entry.context_length)
    return None


def reports_fit(backend: Backend) -> bool:
    """Whether the backend says in a chat's final chunk what its fitting left out: the in-kernel
    Engine does (``dropped_messages``), so it needs no pre-flight; the ``ollama`` client drops the field."""
    engine = sys.modules.get("ollama_magic.engine.engine")  # loaded whenever the backend is an Engine
    return engine is not None and isinstance(backend, engine.Engine)


def fit_note(thread: str, fit: ContextFit) -> str | None:
    """The line a turn prints when its thread did not fit whole."""
    if not fit.dropped_messages:
        return None
    return (f"left out the {fit.dropped_messages} oldest message(s) of thread {thread!r} to fit the "
            f"{fit.num_ctx}-token context (they stay in the history)")


@dataclass
class GuardedThread:
    """What to send for a turn, and how it fits (``estimated``: by characters, not by the server)."""

    messages: list[dict[str, Any]]
    fit: ContextFit
    estimated: bool = False


def guard_thread(backend: Backend, model: str, messages: list[dict[str, Any]], options: Mapping[str, Any],
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


__all__ = ["CHARS_PER_TOKEN", "GuardedThread", "context_length", "estimate_tokens", "fit_note", "guard_thread",
           "guess_tokens", "loaded_context_length", "model_context_length", "reports_fit"]
