"""A reply's token probabilities as a DataFrame (``%%chat --logprobs``): one row per generated token."""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd


def logprob_frame(entries: Sequence[Any]) -> pd.DataFrame:
    """``token``, ``logprob``, ``probability`` and, when alternatives were asked for, ``top``: the
    likeliest tokens at that position as (token, probability) pairs, likeliest first.

    ``entries`` are Ollama's ``logprobs`` items, from our engine or any Ollama client's response."""
    rows = []
    with_top = any(getattr(e, "top_logprobs", None) for e in entries)
    for entry in entries:
        row: dict[str, Any] = {"token": entry.token, "logprob": float(entry.logprob),
                               "probability": math.exp(entry.logprob)}
        if with_top:
            row["top"] = [(t.token, math.exp(t.logprob)) for t in entry.top_logprobs or []]
        rows.append(row)
    columns = ["token", "logprob", "probability"] + (["top"] if with_top else [])
    return pd.DataFrame(rows, columns=columns)


__all__ = ["logprob_frame"]
