"""Log probabilities of generated tokens (``logprobs`` / ``top_logprobs``), as Ollama reports them.

Ollama asks llama-server for ``n_probs`` without post-sampling probabilities, so what it reports is
the softmax of the model's raw logits at that position: before temperature, top-k/top-p, penalties or
a grammar. The chosen token's value is therefore the model's own belief, and a greedy pick is always
the most likely token of the list. Computed with numpy on the batch row the sampler read, only for
sequences that asked.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass, field
from typing import Callable, Sequence

import llama_cpp
import numpy as np

from ..errors import EngineError, InvalidRequest

MAX_TOP_LOGPROBS = 20  # Ollama's bound


@dataclass
class TokenProb:
    """One generated token: its text and bytes, its log probability, and the likeliest alternatives."""

    text: str
    logprob: float
    raw: bytes
    top: list[tuple[str, float, bytes]] = field(default_factory=list)


def check_top_logprobs(top_logprobs: object) -> int:
    """Ollama's rule (checked whether or not ``logprobs`` is set): 0 to 20."""
    if top_logprobs is None:
        return 0
    if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    return top_logprobs


@functools.lru_cache(maxsize=8)
def _row_type(n_vocab: int) -> type:
    return ctypes.c_float * n_vocab


def logits_row(ctx: llama_cpp.llama_context_p, row: int, n_vocab: int) -> np.ndarray:
    """Batch row ``row``'s logits from the last decode, as a numpy view (no copy: read it before the
    next decode). Through a cached ctypes array type: a third of ``np.ctypeslib.as_array``'s cost,
    which matters once per token per sequence."""
    pointer = llama_cpp.llama_get_logits_ith(ctx, row)
    if not pointer:
        raise EngineError(f"no logits for batch row {row}")
    return np.frombuffer(_row_type(n_vocab).from_address(ctypes.addressof(pointer.contents)), dtype=np.float32)


def row_logprobs(ctx: llama_cpp.llama_context_p, row: int, n_vocab: int, token: int, top: int,
                 piece: Callable[[int], bytes], alt_piece: Callable[[int], bytes]) -> TokenProb:
    """``token``'s log-softmax on batch row ``row`` of the last decode, and the ``top`` likeliest tokens.

    ``piece`` renders the chosen token as the reply's text does; ``alt_piece`` renders alternatives
    (special tokens by their names, so an end-of-turn shows as such)."""
    logits = logits_row(ctx, row, n_vocab)
    log_total = _log_total(logits)
    raw = piece(token)
    prob = TokenProb(text=_text(raw), logprob=float(logits[token]) - log_total, raw=raw)
    if top > 0:
        best = np.argpartition(logits, -top)[-top:]
        best = best[np.argsort(-logits[best], kind="stable")]
        for t in best.tolist():
            alt = alt_piece(t)
            prob.top.append((_text(alt), float(logits[t]) - log_total, alt))
    return prob


def token_logprob(ctx: llama_cpp.llama_context_p, row: int, n_vocab: int, tokens: list[int]) -> list[float]:
    """Each of ``tokens``' log-softmax on batch row ``row`` of the last decode: the value
    ``row_logprobs`` reports for it, for scoring given labels instead of a sampled token."""
    logits = logits_row(ctx, row, n_vocab)
    log_total = _log_total(logits)
    return [float(logits[token]) - log_total for token in tokens]


def _log_total(logits: np.ndarray) -> float:
    """log(sum(exp(logits))), in float64 and shifted by the peak so that no exp overflows."""
    peak = float(logits.max())
    return peak + float(np.log(np.exp(logits - peak, dtype=np.float64).sum()))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def as_wire(probs: Sequence[TokenProb]) -> list:
    """Ollama's ``logprobs`` entries (``types.Logprob``): token, logprob, bytes, top_logprobs."""
    from ..types import Logprob, TokenLogprob

    return [
        Logprob(token=p.text, logprob=p.logprob, bytes=list(p.raw) or None,
                top_logprobs=[TokenLogprob(token=t, logprob=lp, bytes=list(b) or None) for t, lp, b in p.top] or None)
        for p in probs
    ]


__all__ = ["MAX_TOP_LOGPROBS", "TokenProb", "as_wire", "check_top_logprobs", "logits_row", "row_logprobs"]
