"""``%ollama tokens``: a text's tokens for a model."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ...errors import InvalidRequest
from . import Text, parse, verb

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..session import NotebookSession


class TokenCount(Text):
    """``%ollama tokens``: how many tokens a text is for a model, and the pieces it splits into."""

    ids: list[int]
    pieces: list[str]

    def __new__(cls, model: str, ids: list[int], pieces: list[str]) -> "TokenCount":
        shown = "|".join(p.replace("\n", "\\n") for p in pieces)
        value = super().__new__(cls, f"{len(ids)} tokens for {model}: {shown}")
        value.ids, value.pieces = ids, pieces
        return value

    def __len__(self) -> int:
        return len(self.ids)


@verb("tokens", "[-m MODEL] TEXT|VAR: count a text's tokens and show its pieces")
def tokens(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> TokenCount:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("-m", "--model")
        p.add_argument("text", nargs="+")

    args = parse("tokens", argv, setup)
    text = " ".join(args.text)
    namespace = getattr(shell, "user_ns", None) or {}
    if len(args.text) == 1 and text.isidentifier() and text in namespace:
        value = namespace[text]
        if not isinstance(value, str):
            raise InvalidRequest(f"{text} is a {type(value).__name__}, not a str: %ollama tokens counts text")
        text = value
    model = args.model or session.chat_model
    ids = list(session.backend.tokenize(model, text).tokens)
    pieces = [session.backend.detokenize(model, [i]).content for i in ids]
    return TokenCount(model, ids, pieces)


__all__ = ["TokenCount"]
