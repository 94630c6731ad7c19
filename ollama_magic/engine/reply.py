"""A reply as the caller sees it: the model's text split into thinking, content and tool calls.

One rule for streaming and whole replies: the text goes through the thinking parser, then what is
not trace through the tool-call parser. A streamed reply hands on each piece's share as soon as it is
certain; a whole reply is the join of those shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..types import ToolCall
from .thinking import ThinkingParser
from .toolcalls import ToolCallParser


@dataclass
class ReplyPart:
    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: the log probabilities of the tokens behind this part (``types.Logprob``), when asked for; a part
    #: may carry only these while the parsers hold its text back, as Ollama sends such chunks
    logprobs: list[Any] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.thinking or self.tool_calls or self.logprobs)


class ReplyParser:
    def __init__(self, *, thinking: tuple[str, str] | None = None, started_thinking: bool = False,
                 tools: Sequence[Mapping[str, Any]] | None = None, tool_tag: str = "{") -> None:
        self.thinking = ThinkingParser(*thinking) if thinking else None
        if self.thinking is not None and started_thinking:
            self.thinking.add(thinking[0])  # the prompt opened the trace: the reply starts inside it
        self.tools = ToolCallParser(tools, tool_tag) if tools else None

    def add(self, text: str) -> ReplyPart:
        trace, content = self.thinking.add(text) if self.thinking is not None else ("", text)
        return self._with_calls(trace, content)

    def finish(self) -> ReplyPart:
        trace, content = self.thinking.finish() if self.thinking is not None else ("", "")
        part = self._with_calls(trace, content)
        if self.tools is not None:
            part.content += self.tools.finish()
        return part

    def _with_calls(self, trace: str, content: str) -> ReplyPart:
        if self.tools is None or not content:
            return ReplyPart(content=content, thinking=trace)
        calls, content = self.tools.add(content)
        return ReplyPart(content=content, thinking=trace, tool_calls=calls)


def join_parts(parts: Sequence[ReplyPart]) -> ReplyPart:
    return ReplyPart(
        content="".join(p.content for p in parts), thinking="".join(p.thinking for p in parts),
        tool_calls=[c for p in parts for c in p.tool_calls], logprobs=[lp for p in parts for lp in p.logprobs],
    )
