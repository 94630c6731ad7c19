"""``%%chat --docs``: the retrieved chunks put in front of the message with numbered source tags, as many
as fit, and the table of them the reply keeps (``reply.sources``).

The fitting is the notebook context's rule (``notebook/context.py``: the model's own tokenizer, and the
one budget ``--docs`` and ``--context`` share, of which the caller gives the sources' part); the
lowest-ranked chunks go first, so the numbers the model sees stay 1..n in rank order.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from ..errors import InvalidRequest

INSTRUCTION = ("Answer the message using the sources below where they hold the answer. Cite each source you "
               "use by its number in brackets, like [1].")
SOURCE_COLUMNS = ["n", "cite", "score", "source", "position", "text"]


def sources_block(hits: pd.DataFrame) -> str:
    """The sources as the model reads them: ``[n] cite`` then the chunk's text."""
    return "\n\n".join(f"[{n}] {cite}\n{text}" for n, (cite, text) in enumerate(zip(hits.cite, hits.text), start=1))


def with_sources(message: str, hits: pd.DataFrame) -> str:
    if hits.empty:
        return message
    return f"{INSTRUCTION}\n\nSources:\n{sources_block(hits)}\n\nMessage:\n{message}"


def fit_sources(message: str, hits: pd.DataFrame, count_tokens: Callable[[str], int],
                budget: int) -> tuple[str, pd.DataFrame]:
    """The message with as many of the best ``hits`` as fit ``budget`` tokens; -> (text, the sources kept,
    numbered from 1).

    When not even the best one fits, that is an InvalidRequest, not an answer without sources: the user
    asked for an answer from the documents, and an uncited reply with an empty ``reply.sources`` would
    read as one while costing a whole generation; the error says what to change."""
    kept = hits.reset_index(drop=True)
    while len(kept) and count_tokens(with_sources(message, kept)) - count_tokens(message) > budget:
        kept = kept.iloc[:-1]
    if len(hits) and not len(kept):
        best = count_tokens(with_sources(message, hits.iloc[:1])) - count_tokens(message)
        raise InvalidRequest(f"--docs: not even the best source fits: it takes {best} tokens and {budget} are left "
                             "for sources; give the model a larger context (--options '{\"num_ctx\": 8192}'), "
                             "attach fewer cells with --context, or learn the index again with a smaller --size")
    frame = kept.assign(n=range(1, len(kept) + 1))
    return with_sources(message, kept), frame.reindex(columns=SOURCE_COLUMNS + [c for c in frame.columns
                                                                              if c not in SOURCE_COLUMNS])


__all__ = ["INSTRUCTION", "SOURCE_COLUMNS", "fit_sources", "sources_block", "with_sources"]
