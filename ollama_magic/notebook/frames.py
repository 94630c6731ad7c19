"""Conversation threads as typed pandas DataFrames (``%ollama history --df``, the history panel).

pandas is imported on first use, not when the magics load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FRAME_COLUMNS = [
    "role", "content", "model", "created_at", "total_duration", "eval_count", "prompt_eval_count", "interrupted",
]


def messages_frame(messages: list[dict[str, Any]]) -> pd.DataFrame:
    """Messages as a typed DataFrame (pandas is imported here, not when the magics load)."""
    import pandas as pd

    rows = pd.DataFrame(list(messages), columns=FRAME_COLUMNS)
    return pd.DataFrame(
        {
            "role": rows["role"].astype(object),
            "content": rows["content"].astype(object),
            "model": rows["model"].astype(object).where(rows["model"].notna(), None),
            "created_at": pd.to_datetime(rows["created_at"], utc=True, format="ISO8601"),
            "total_duration": pd.to_timedelta(rows["total_duration"].astype("Int64").astype("float64"), unit="ns"),
            "eval_count": rows["eval_count"].astype("Int64"),
            "prompt_eval_count": rows["prompt_eval_count"].astype("Int64"),
            "interrupted": rows["interrupted"].astype("boolean").fillna(False).astype(bool),
        },
        columns=FRAME_COLUMNS,
    )


__all__ = ["FRAME_COLUMNS", "messages_frame"]
