"""Cutting a text into chunks the embedding model reads whole: at most ``size`` of its own tokens,
each starting with the last ``overlap`` tokens' worth of lines of the one before, cut between lines
(between sentences inside a line too long for one chunk; mid-sentence only where a sentence alone is
too long).

Why lines as the unit: every source we read has them (prose, code, cells), a chunk then has a line
range a citation can name, and code is never cut mid-line. A chunk's length is the sum of its lines'
token counts; a tokenizer may merge across a line break, so the true length can differ by a token or
two per line: ``size``'s default (256) leaves the all-minilm context (512) that room, and the engine
truncates (never fails) a text that still ran over.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: the default chunk and overlap, in the embedding model's tokens
CHUNK_TOKENS = 256
OVERLAP_TOKENS = 32

TokenCounter = Callable[[str], int]

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True)
class Chunk:
    """A chunk's text and the lines (1-based, inclusive) of the text it was cut from."""

    text: str
    first_line: int
    last_line: int
    tokens: int


@dataclass(frozen=True)
class _Unit:
    text: str
    line: int
    tokens: int


def check_sizes(size: int, overlap: int) -> None:
    """One clear error before anything is read."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"chunk size must be at least 8 tokens, not {size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < size:
        raise ValueError(f"overlap must be 0 or more tokens and less than the chunk size ({size}), not {overlap!r}")


def chunk_text(text: str, count: TokenCounter, *, size: int = CHUNK_TOKENS, overlap: int = OVERLAP_TOKENS,
               first_line: int = 1) -> list[Chunk]:
    """``text`` in chunks of at most ``size`` tokens (by ``count``), overlapping by up to ``overlap``."""
    check_sizes(size, overlap)
    units = [u for u in _units(text, count, size, first_line) if u.tokens > 0 or u.text.strip()]
    chunks: list[Chunk] = []
    current: list[_Unit] = []
    total = 0
    for unit in units:
        if current and total + unit.tokens > size:
            chunks.append(_chunk(current, total))
            current, total = _tail(current, overlap, size - unit.tokens)
        current.append(unit)
        total += unit.tokens
    if current:
        chunks.append(_chunk(current, total))
    return [c for c in chunks if c.text]


def _chunk(units: list[_Unit], tokens: int) -> Chunk:
    return Chunk("".join(u.text for u in units).strip(), units[0].line, units[-1].line, tokens)


def _tail(units: list[_Unit], overlap: int, room: int) -> tuple[list[_Unit], int]:
    """The last units of a finished chunk that fit in ``overlap`` tokens (and beside the next unit)."""
    kept: list[_Unit] = []
    total = 0
    for unit in reversed(units[1:]):  # never the whole chunk again
        if total + unit.tokens > min(overlap, room):
            break
        kept.insert(0, unit)
        total += unit.tokens
    return kept, total


def _units(text: str, count: TokenCounter, size: int, first_line: int) -> Iterator[_Unit]:
    for offset, line in enumerate(text.splitlines(keepends=True)):
        number = first_line + offset
        if not line.strip():
            yield _Unit(line, number, 0)
            continue
        tokens = count(line)
        if tokens <= size:
            yield _Unit(line, number, tokens)
            continue
        for sentence in _SENTENCE_END.split(line):
            yield from _cut(sentence + " ", count, size, number)


def _cut(text: str, count: TokenCounter, size: int, line: int) -> Iterator[_Unit]:
    """A sentence longer than a chunk, halved at a space (else anywhere) until each part fits."""
    tokens = count(text)
    if tokens <= size or len(text) < 2:
        yield _Unit(text, line, min(tokens, size))
        return
    middle = len(text) // 2
    space = text.rfind(" ", 0, middle)
    cut = space + 1 if space > 0 else middle
    yield from _cut(text[:cut], count, size, line)
    yield from _cut(text[cut:], count, size, line)


__all__ = ["CHUNK_TOKENS", "OVERLAP_TOKENS", "Chunk", "TokenCounter", "check_sizes", "chunk_text"]
