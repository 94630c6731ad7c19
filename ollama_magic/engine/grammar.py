"""Grammars for constrained sampling: ``format: "json"``, a JSON schema as GBNF, and the check that a
grammar parses before a sampler is built from it (a bad one would crash llama.cpp at sampling time)."""

from __future__ import annotations

import json
from typing import Any

import llama_cpp
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from ..errors import InvalidRequest

__all__ = ["JSON_GRAMMAR", "check_grammar", "schema_grammar"]

JSON_GRAMMAR = JSON_GBNF


def schema_grammar(schema: dict[str, Any]) -> str:
    """A JSON schema as GBNF (llama.cpp's converter); bad schemas become a clear 400, not a crash."""
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds
        raise InvalidRequest(f"invalid format schema: {exc}") from None


def check_grammar(vocab: llama_cpp.llama_vocab_p, gbnf: str) -> None:
    """An invalid grammar segfaults llama.cpp at sampling time; try it once on its own first (on the
    model's owner thread: it builds a sampler on the model's vocabulary)."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    if not sampler:
        raise InvalidRequest("the format schema could not be turned into a grammar")
    llama_cpp.llama_sampler_free(sampler)
