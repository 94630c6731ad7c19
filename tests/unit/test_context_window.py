"""The one context-fitting rule (engine/context_window.py): whole turns left out of a chat, an
over-long prompt cut as Ollama cuts it, and the numbers a context shift uses. The engine's use of it
on the real model is in tests/integration/test_context_window.py."""

from __future__ import annotations

from typing import Any

import pytest

from ollama_magic.engine.context_window import (INPUT_TOO_LONG, ContextWindow, fit_chat, fit_messages, fit_prompt,
                                                kept_at_start, shift_discard, surely_fits)
from ollama_magic.errors import InvalidRequest


def roles_and_contents(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def char_count(messages: list[dict[str, Any]]) -> int:
    return sum(len(m["content"]) for m in messages)


def conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "S" * 10},
        {"role": "user", "content": "u1" * 5},
        {"role": "assistant", "content": "a1" * 5},
        {"role": "user", "content": "u2" * 5},
        {"role": "assistant", "content": "a2" * 5},
        {"role": "assistant", "content": "a2b" * 5},
        {"role": "user", "content": "u3" * 5},
        {"role": "assistant", "content": "a3" * 5},
        {"role": "user", "content": "now" * 5},
    ]


# ---- whole turns (moved from the notebook, which now asks the engine) ----------------------------


def test_fit_keeps_everything_that_fits() -> None:
    messages = conversation()
    kept, dropped = fit_messages(messages, char_count, limit=char_count(messages))
    assert kept == messages and dropped == 0


def test_fit_drops_the_oldest_whole_turn_first() -> None:
    messages = conversation()
    kept, dropped = fit_messages(messages, char_count, limit=char_count(messages) - 1)
    assert dropped == 2
    assert [m["content"][:2] for m in kept] == ["SS", "u2", "a2", "a2", "u3", "a3", "no"]


def test_fit_drops_a_user_message_with_all_its_replies() -> None:
    messages = conversation()
    kept, dropped = fit_messages(messages, char_count, limit=char_count(messages) - 21)
    assert dropped == 5  # turn 1 (2 messages) and turn 2 (3 messages), never half of turn 2
    assert [m["content"][:2] for m in kept] == ["SS", "u3", "a3", "no"]
    assert char_count(kept) <= char_count(messages) - 21


def test_fit_never_drops_system_or_the_current_question_even_over_the_limit() -> None:
    messages = conversation()
    kept, dropped = fit_messages(messages, char_count, limit=1)
    assert roles_and_contents(kept) == [("system", "S" * 10), ("user", "now" * 5)]
    assert dropped == len(messages) - 2


def test_fit_without_a_system_message_and_with_one_message() -> None:
    only = [{"role": "user", "content": "x" * 100}]
    assert fit_messages(only, char_count, limit=5) == (only, 0)
    messages = conversation()[1:]
    kept, dropped = fit_messages(messages, char_count, limit=40)
    assert kept[-1]["content"] == "now" * 5 and kept[0]["role"] == "user"
    assert char_count(kept) <= 40 and dropped == len(messages) - len(kept)


def test_fit_returns_a_new_list_and_leaves_the_input_alone() -> None:
    messages = conversation()
    original = [dict(m) for m in messages]
    kept, _ = fit_messages(messages, char_count, limit=30)
    assert messages == original
    assert kept is not messages


# ---- a chat: rendered and counted -------------------------------------------------------------


def render(messages: list[dict[str, Any]]) -> str:
    return "".join(f"<{m['role']}>{m['content']}" for m in messages)


def test_a_chat_that_surely_fits_is_not_even_counted() -> None:
    def tokenize(text: str) -> list[int]:
        raise AssertionError("counted a prompt that cannot be over the budget")

    fitted = fit_chat(conversation(), render, tokenize, ContextWindow(num_ctx=4096))
    assert fitted.dropped == 0 and fitted.text == render(conversation()) and fitted.tokens is None


def test_a_long_chat_leaves_room_for_the_answer_and_says_how_many_went() -> None:
    messages = conversation()
    calls: list[str] = []

    def tokenize(text: str) -> list[int]:  # one token per character
        calls.append(text)
        return list(range(len(text)))

    full = len(render(messages))
    window = ContextWindow(num_ctx=full, num_predict=20)  # the whole chat fits num_ctx, not with the answer
    fitted = fit_chat(messages, render, tokenize, window)
    assert window.room == 20 and window.history_budget == full - 20
    assert fitted.dropped == 2 and fitted.messages == [m for i, m in enumerate(messages) if i not in (1, 2)]
    assert fitted.text == render(fitted.messages) and len(fitted.text) <= full - 20
    assert len(calls) <= 4  # bisection over 3 turns, each prompt counted once


def test_truncate_false_leaves_every_message_in() -> None:
    messages = conversation()
    fitted = fit_chat(messages, render, lambda t: list(range(len(t))), ContextWindow(num_ctx=10, truncate=False))
    assert fitted.dropped == 0 and fitted.messages == messages


def test_room_is_num_predict_up_to_half_the_context_else_a_quarter() -> None:
    assert ContextWindow(num_ctx=1000, num_predict=100).room == 100
    assert ContextWindow(num_ctx=1000, num_predict=900).room == 500
    assert ContextWindow(num_ctx=1000).room == ContextWindow(num_ctx=1000, num_predict=-2).room == 250
    assert surely_fits("abc", 6) and not surely_fits("abcd", 6) and not surely_fits("é", 4)


# ---- one prompt: tokens --------------------------------------------------------------------------

BOS = [2]


def test_a_prompt_that_leaves_a_token_to_generate_is_unchanged() -> None:
    tokens = BOS + list(range(100, 199))
    assert fit_prompt(tokens, ContextWindow(num_ctx=101), BOS) is tokens
    assert fit_prompt(tokens, ContextWindow(num_ctx=101, truncate=False), BOS) is tokens


def test_an_over_long_prompt_keeps_bos_num_keep_and_its_end_with_half_the_rest_free() -> None:
    tokens = BOS + list(range(100, 400))  # 301 tokens
    fitted = fit_prompt(tokens, ContextWindow(num_ctx=100, num_keep=4), BOS)
    keep = 5  # BOS + num_keep, as Ollama counts it
    assert len(fitted) == 100 - (100 - keep) // 2 == 53  # not num_ctx - 1: the answer gets 47 tokens
    assert fitted[:keep] == tokens[:keep] and fitted[keep:] == tokens[-(53 - keep):]


def test_num_keep_minus_one_keeps_the_start_of_the_prompt() -> None:
    tokens = BOS + list(range(100, 400))
    fitted = fit_prompt(tokens, ContextWindow(num_ctx=100, num_keep=-1), BOS)
    assert fitted == tokens[:99]
    assert kept_at_start(-1, tokens, BOS, 100) == 99
    assert kept_at_start(4, tokens, [], 100) == 4 and kept_at_start(4, tokens[1:], BOS, 100) == 4


def test_truncate_false_refuses_an_over_long_prompt_with_ollamas_words() -> None:
    with pytest.raises(InvalidRequest, match=f"^{INPUT_TOO_LONG}$") as caught:
        fit_prompt(BOS + list(range(100, 400)), ContextWindow(num_ctx=100, truncate=False), BOS)
    assert caught.value.status_code == 400 and INPUT_TOO_LONG == "the input length exceeds the context length"


def test_a_context_shift_discards_half_of_what_follows_the_kept_tokens() -> None:
    assert shift_discard(128, 5) == 61
    assert shift_discard(6, 5) == 0  # nothing left to discard: the sequence ends with "length"
