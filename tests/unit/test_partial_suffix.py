"""The one rule for holding back the end of a streamed reply that may grow into a tag or stop string."""

from __future__ import annotations

import pytest

from ollama_magic.engine.text import partial_suffix


@pytest.mark.parametrize(
    ("text", "tags", "held"),
    [
        ("hello </th", ["</think>"], 4),  # a partial tag at the end
        ("hello <", ["</think>"], 1),
        ("hello", ["</think>"], 0),  # nothing that could grow into the tag
        ("hello </think>", ["</think>"], 0),  # a whole tag is the caller's job (find), not held back
        ("", ["</think>"], 0),
        ("abc", [], 0),
        ("ab", ["abcd"], 2),  # the text is shorter than the tag
        ("zxa", ["ab", "xab", "c"], 2),  # the longest over all tags wins, whatever their order
        ("zxa", ["xab", "ab", "c"], 2),
        ("a<|", ["<|im_end|>", "|>"], 2),
        ("end\n\n", ["\n\nUser:"], 2),
    ],
)
def test_partial_suffix(text: str, tags: list[str], held: int) -> None:
    assert partial_suffix(text, tags) == held
