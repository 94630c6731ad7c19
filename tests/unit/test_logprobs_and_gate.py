"""Token log probabilities travelling with their text through stop-string hold-back, the grammar gate
of thinking replies, and the /v1 shapes of logprobs (no model needed)."""

from __future__ import annotations

import pytest

from ollama_magic.engine.decoder import TextAssembler
from ollama_magic.engine.logprobs import TokenProb, as_wire, check_top_logprobs
from ollama_magic.engine.thinking import GrammarGate
from ollama_magic.errors import InvalidRequest
from ollama_magic.server.openai_api import CompletionOffsets, chat_logprobs


def assemble(pieces: list[str], stops: list[str], final: bool = True) -> list[tuple[str, list[str]]]:
    """Feed ``pieces`` as tokens (each with its own TokenProb); the (text, token texts) emitted."""
    out: list[tuple[str, list[str]]] = []
    text = TextAssembler(stops, lambda t, probs: out.append((t, [p.text for p in probs])))
    for piece in pieces:
        if text.add(piece.encode(), TokenProb(piece, -1.0, piece.encode())):
            return out
    if final:
        text.finish()
    return out


def test_each_token_goes_out_with_its_text_when_nothing_is_held():
    assert assemble(["Hel", "lo", " world"], []) == [("Hel", ["Hel"]), ("lo", ["lo"]), (" world", [" world"])]


def test_a_token_held_back_as_a_possible_stop_keeps_its_logprob_until_its_text_is_emitted():
    out = assemble(["Hi", " ", "<", "b", "!"], ["<end>"])
    assert out == [("Hi", ["Hi"]), (" ", [" "]), ("<b", ["<", "b"]), ("!", ["!"])]
    # a token whose text is only partly held goes out with the part that is certain
    assert assemble(["Hi", " <", "b"], ["<end>"]) == [("Hi", ["Hi"]), (" ", [" <"]), ("<b", ["b"])]


def test_tokens_wholly_inside_a_stop_string_are_dropped_and_a_straddling_one_is_kept():
    out = assemble(["One", " two<e", "nd", ">", " three"], ["<end>"])
    assert "".join(t for t, _ in out) == "One two"
    assert [p for _, probs in out for p in probs] == ["One", " two<e"]  # "nd" and ">" made only the stop


def test_the_tail_held_at_the_end_is_released_by_finish():
    out = assemble(["a", "<en"], ["<end>"])
    assert [p for _, probs in out for p in probs] == ["a", "<en"] and "".join(t for t, _ in out) == "a<en"


def test_a_token_holding_part_of_a_character_goes_out_with_the_character():
    out: list[tuple[str, list[bytes]]] = []
    text = TextAssembler([], lambda t, probs: out.append((t, [p.raw for p in probs])))
    euro = "€".encode()
    text.add(euro[:2], TokenProb("\ufffd", -0.5, euro[:2]))
    text.add(euro[2:] + b"!", TokenProb("\ufffd!", -0.5, euro[2:] + b"!"))
    text.finish()
    assert out == [("€!", [euro[:2], euro[2:] + b"!"])]


def test_top_logprobs_must_be_between_0_and_20():
    assert check_top_logprobs(None) == 0 and check_top_logprobs(20) == 20
    for bad in (-1, 21, True, "3"):
        with pytest.raises(InvalidRequest, match="top_logprobs must be between 0 and 20"):
            check_top_logprobs(bad)


def test_wire_entries_have_ollamas_fields():
    entry = as_wire([TokenProb("é", -0.25, "é".encode(), [("é", -0.25, "é".encode()), ("e", -2.0, b"e")])])[0]
    dumped = entry.model_dump(exclude_none=True)
    assert dumped == {"token": "é", "logprob": -0.25, "bytes": [195, 169],
                      "top_logprobs": [{"token": "é", "logprob": -0.25, "bytes": [195, 169]},
                                       {"token": "e", "logprob": -2.0, "bytes": [101]}]}
    assert "top_logprobs" not in as_wire([TokenProb("x", -1.0, b"x")])[0].model_dump(exclude_none=True)


def test_openai_shapes_of_logprobs():
    entries = as_wire([TokenProb("Hi", -0.1, b"Hi", [("Hi", -0.1, b"Hi")]), TokenProb(" there", -0.2, b" there")])
    chat = chat_logprobs(entries)
    assert chat["content"][1] == {"token": " there", "logprob": -0.2, "bytes": list(b" there"), "top_logprobs": []}
    assert chat_logprobs([]) is None
    offsets = CompletionOffsets(top=1)
    first, second = offsets(entries[:1]), offsets(entries[1:])
    assert first == {"tokens": ["Hi"], "token_logprobs": [-0.1], "top_logprobs": [{"Hi": -0.1}], "text_offset": [0]}
    assert second["text_offset"] == [2]  # offsets run on across a stream's chunks
    assert CompletionOffsets(top=0)(entries)["top_logprobs"] is None


# ---- the grammar gate of a thinking reply ----------------------------------------------------------


def test_gate_opens_after_the_closing_tag_even_split_across_tokens():
    gate = GrammarGate("<think>", "</think>", started=True)
    assert [gate.add(t) for t in ["Let", " me see", " </th", "ink>"]] == ["free"] * 3 + ["constrain"]


def test_gate_waits_for_a_trace_the_reply_opens_itself():
    gate = GrammarGate("<think>", "</think>", started=False)
    assert [gate.add(t) for t in ["\n", "<thi", "nk>", "hmm", "</think>"]] == ["free"] * 4 + ["constrain"]


def test_gate_constrains_at_once_when_the_reply_skips_its_trace():
    gate = GrammarGate("<think>", "</think>", started=False)
    assert gate.add("{") == "resample"
