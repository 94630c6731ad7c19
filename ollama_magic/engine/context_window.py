"""Fitting a request into its context window: the one rule, used by every front end.

Ollama fits a request in two places and so do we, with the model's own tokenizer:

* before decoding (``truncate``, default true): a chat leaves out its oldest whole turns until the
  rendered prompt leaves room for the answer, never a system message and never the last user message
  (with what follows it); this is Ollama's ``chatPrompt``, except that Ollama fits the prompt to the
  whole ``num_ctx`` and leaves the answer to context shifting, which would then cut into the system
  prompt. A prompt that is still longer than the context (any generate prompt, or a chat whose system
  message and question alone are too long) keeps its first ``num_keep`` tokens (and BOS) and its end,
  freeing half of the rest for the answer as Ollama's runners do. ``truncate: false`` refuses a prompt
  that does not fit with Ollama's 400 ``the input length exceeds the context length``.
* while decoding (``shift``, default true): a sequence that fills its slot discards half of its
  tokens after the first ``num_keep`` from its KV cache and goes on (llama-server's context shift,
  done in ``decoder.py``); ``shift: false`` ends it with ``done_reason: "length"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import InvalidRequest

log = logging.getLogger("ollama_magic")

#: Ollama's words (``runner/ollamarunner``'s errorInputTooLong, still its embed error), which clients match.
INPUT_TOO_LONG = "the input length exceeds the context length"

#: Tokens any text can come to beyond one per UTF-8 byte: BOS, EOS and a SentencePiece prefix space.
#: Every other token covers at least one byte, so a text this short surely fits without counting.
_EXTRA_TOKENS = 3

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class ContextWindow:
    """One request's context: ``num_ctx`` tokens per sequence (the slot), ``num_predict`` and
    ``num_keep`` as asked, and whether an over-long prompt may be cut (``truncate``)."""

    num_ctx: int
    num_predict: int = -1
    num_keep: int = 4
    truncate: bool = True

    @property
    def room(self) -> int:
        """Tokens kept free for the answer when old turns are left out: ``num_predict`` (at most half
        the context), a quarter of the context when it is unset."""
        if self.num_predict > 0:
            return min(self.num_predict, self.num_ctx // 2)
        return self.num_ctx // 4

    @property
    def history_budget(self) -> int:
        """The most tokens a chat prompt may fill before its oldest turns are left out."""
        return max(1, self.num_ctx - self.room)

    @property
    def prompt_limit(self) -> int:
        """The longest prompt that still leaves one token to generate."""
        return self.num_ctx - 1


def surely_fits(text: str, limit: int) -> bool:
    """True when ``text`` cannot come to more than ``limit`` tokens whatever the tokenizer, so the
    model need not even be loaded to count it."""
    return len(text.encode("utf-8")) + _EXTRA_TOKENS <= limit


# ---- chat: whole turns --------------------------------------------------------------------------


def droppable_turns(messages: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Indices of the messages that may be left out, grouped in turns, oldest first.

    Everything before the last user message except system messages; a turn starts at each user
    message (messages before the first user message form a turn of their own), so the model never
    sees an answer or a tool result without the question that led to it.
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


def fit_messages(messages: Sequence[dict[str, Any]], count_tokens: Callable[[Messages], int],
                 limit: int) -> tuple[Messages, int]:
    """Leave out the oldest whole turns until ``count_tokens(kept) <= limit``: (kept, messages left out).

    System messages and the last user message (with anything after it) are never left out: if they
    alone are over ``limit`` they are returned anyway (the token rule below then applies). The fewest
    turns to leave out are found by bisection, so the template and tokenizer run O(log turns) times;
    that relies on fewer messages never counting more tokens.
    """
    turns = droppable_turns(messages)

    def kept_without(turn_count: int) -> Messages:
        dropped = {index for turn in turns[:turn_count] for index in turn}
        return [message for index, message in enumerate(messages) if index not in dropped]

    if count_tokens(list(messages)) <= limit:
        return list(messages), 0
    low, high = 1, len(turns)  # invariant: leaving out `high` turns fits, or nothing more can go
    while low < high:
        middle = (low + high) // 2
        if count_tokens(kept_without(middle)) <= limit:
            high = middle
        else:
            low = middle + 1
    kept = kept_without(high)
    return kept, len(messages) - len(kept)


@dataclass
class FittedChat:
    """A chat after fitting: the messages the model reads, their prompt, how many were left out, and
    the prompt's tokens when they were counted on the way (None: not needed to decide)."""

    messages: Messages
    text: str
    dropped: int
    tokens: list[int] | None = None


def fit_chat(messages: Messages, render: Callable[[Messages], str], tokenize: Callable[[str], list[int]],
             window: ContextWindow, text: str | None = None) -> FittedChat:
    """Ollama's ``chatPrompt`` with room for the answer. ``text`` is ``render(messages)`` when the
    caller has it already; ``tokenize`` is only called when the prompt might not fit."""
    text = render(messages) if text is None else text
    if not window.truncate or surely_fits(text, window.history_budget):
        return FittedChat(list(messages), text, 0)
    counted: dict[str, list[int]] = {}

    def count(candidate: Messages) -> int:
        prompt = text if len(candidate) == len(messages) else render(candidate)
        if prompt not in counted:
            counted[prompt] = tokenize(prompt)
        return len(counted[prompt])

    kept, dropped = fit_messages(messages, count, window.history_budget)
    if not dropped:
        return FittedChat(kept, text, 0, counted.get(text))
    kept_text = render(kept)
    log.info("left out the %d oldest of %d messages to fit num_ctx %d (%d tokens kept for the answer)",
             dropped, len(messages), window.num_ctx, window.room)
    return FittedChat(kept, kept_text, dropped, counted.get(kept_text))


# ---- tokens: one prompt ------------------------------------------------------------------------


def kept_at_start(num_keep: int, prompt: Sequence[int], bos: Sequence[int], num_ctx: int) -> int:
    """How many tokens at the prompt's start survive truncation and context shifts: ``num_keep``
    (-1: the whole prompt), plus the BOS token the tokenizer put first, as Ollama counts it; always
    leaving at least one token that can go."""
    keep = len(prompt) if num_keep < 0 else num_keep
    if bos and list(prompt[: len(bos)]) == list(bos):
        keep += len(bos)
    return max(0, min(keep, num_ctx - 1))


def fit_prompt(tokens: list[int], window: ContextWindow, bos: Sequence[int] = ()) -> list[int]:
    """The prompt the decoder gets: unchanged when it leaves a token to generate; else (``truncate``)
    its first tokens (:func:`kept_at_start`) and its end, so that half of the rest of the context is
    free, as Ollama's ``contextShiftPromptLimit``; else Ollama's 400."""
    if len(tokens) <= window.prompt_limit:
        return tokens
    if not window.truncate:
        raise InvalidRequest(INPUT_TOO_LONG)
    keep = kept_at_start(window.num_keep, tokens, bos, window.num_ctx)
    limit = window.num_ctx - max((window.num_ctx - keep) // 2, 1)
    fitted = tokens[:keep] + tokens[len(tokens) - (limit - keep):] if limit > keep else tokens[:keep]
    log.warning("truncating input prompt: %d tokens, num_ctx %d, keeping the first %d and the last %d",
                len(tokens), window.num_ctx, keep, len(fitted) - keep)
    return fitted


def shift_discard(n_past: int, keep: int) -> int:
    """Tokens a full sequence discards after its first ``keep`` (llama-server's ``n_left / 2``)."""
    return max(0, (n_past - keep) // 2)


__all__ = ["INPUT_TOO_LONG", "ContextWindow", "FittedChat", "droppable_turns", "fit_chat", "fit_messages",
           "fit_prompt", "kept_at_start", "shift_discard", "surely_fits"]
