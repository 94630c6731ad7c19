"""Small text rules the reply parsers share.

A streamed reply arrives piece by piece, so a stop string or a tag (``</think>``, ``<tool_call>``) can be
split across two pieces. Each parser holds back the end of its text that could still grow into one; this
module says how much, once, so the stop-string splitter, the thinking parser and the tool-call parser
agree."""

from __future__ import annotations

from collections.abc import Iterable


def partial_suffix(text: str, tags: Iterable[str]) -> int:
    """Length of the longest end of ``text`` that is the start, but not the whole, of one of ``tags``.

    That many characters must be held back: the next piece may complete the tag. A whole tag at the end
    is not counted; callers look for whole tags first (``str.find``)."""
    hold = 0
    for tag in tags:
        for k in range(min(len(tag) - 1, len(text)), hold, -1):
            if text.endswith(tag[:k]):
                hold = k
                break
    return hold


__all__ = ["partial_suffix"]
