"""The notebook's context-length guard: leave out the oldest whole turns so a thread fits ``num_ctx``.

Kept apart because it is moving: context fitting belongs to the engine (Ollama's ``chatPrompt``, with
the real tokenizer), so HTTP clients get it too. Until then ``%%chat`` and the chat panel call
:func:`fit_history` before sending.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..options import OPTION_DEFAULTS

#: A deliberately pessimistic guess of characters per token (English averages ~4; code and other
#: languages less). Used only to decide which old turns to leave out; the engine counts exactly.
CHARS_PER_TOKEN = 3


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(m.get("content") or "") // CHARS_PER_TOKEN + 4 for m in messages)


def context_length(options: Mapping[str, Any]) -> int:
    """The context the request asks for, else Ollama's default."""
    return int(options.get("num_ctx") or OPTION_DEFAULTS["num_ctx"])


def context_budget(options: Mapping[str, Any]) -> int:
    """Tokens the history may fill: the context, less room for the answer."""
    n_ctx = context_length(options)
    answer = int(options.get("num_predict") or 0)
    reserve = answer if 0 < answer < n_ctx // 2 else n_ctx // 4
    return n_ctx - reserve


def fit_history(messages: list[dict[str, Any]], options: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """``messages`` fitted to the request's context by the character estimate: (kept, messages dropped)."""
    return fit_to_context(messages, estimate_tokens, context_budget(options))


def fit_to_context(
    messages: list[dict[str, Any]],
    count_tokens: Callable[[list[dict[str, Any]]], int],
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """Drop the oldest whole turns until ``count_tokens(kept) <= limit``; return (kept, messages dropped).

    A turn is a user message and the replies after it, dropped together so the model never sees an
    answer without its question. System messages and the last user message (with anything after it)
    are never dropped: if they alone are over ``limit`` they are returned anyway and the engine
    truncates. The smallest number of turns to drop is found by bisection, so a slow tokenizer is
    called O(log turns) times; that relies on fewer messages never counting more tokens.
    """
    turns = _droppable_turns(messages)

    def kept_without(turn_count: int) -> list[dict[str, Any]]:
        dropped = {index for turn in turns[:turn_count] for index in turn}
        return [message for index, message in enumerate(messages) if index not in dropped]

    if count_tokens(list(messages)) <= limit:
        return list(messages), 0
    low, high = 1, len(turns)  # invariant: dropping `high` turns fits, or nothing more can be dropped
    while low < high:
        middle = (low + high) // 2
        if count_tokens(kept_without(middle)) <= limit:
            high = middle
        else:
            low = middle + 1
    kept = kept_without(high)
    return kept, len(messages) - len(kept)


def _droppable_turns(messages: list[dict[str, Any]]) -> list[list[int]]:
    """Indices of the droppable messages, grouped in turns, oldest first.

    Everything before the last user message except system messages; a turn starts at each user
    message (messages before the first user message form a turn of their own).
    """
    user_indices = [index for index, message in enumerate(messages) if message.get("role") == "user"]
    if user_indices:
        current = user_indices[-1]
    else:  # no question at all: keep the last non-system message as the "current" one
        others = [index for index, message in enumerate(messages) if message.get("role") != "system"]
        current = others[-1] if others else len(messages)
    turns: list[list[int]] = []
    for index in range(current):
        role = messages[index].get("role")
        if role == "system":
            continue
        if role == "user" or not turns:
            turns.append([])
        turns[-1].append(index)
    return turns


__all__ = ["CHARS_PER_TOKEN", "context_budget", "context_length", "estimate_tokens", "fit_history", "fit_to_context"]
