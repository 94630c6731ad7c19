"""Thinking traces: which models have them, the ``think`` values, and splitting a reply into its trace
and its answer while it streams, as Ollama's ``thinking`` package does.

A Go template supports thinking when it renders ``.Thinking`` inside ``range .Messages``; the trace's
opening and closing tags are the first and last text around that reference (``<think>``/``</think>``).
A GGUF Jinja template supports it when it writes both ``<think>`` and ``</think>``.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import InvalidRequest
from .gotemplate import Action, Branch, Node, Operand, Pipeline, Template, Text
from .text import partial_suffix

THINK_LEVELS = ("low", "medium", "high", "max")
JINJA_TAGS = ("<think>", "</think>")


def check_think(think: Any) -> bool | str | None:
    """A ``think`` value as Ollama accepts it: true/false, a level, or unset."""
    if think is None or isinstance(think, bool):
        return think
    if isinstance(think, str) and think in THINK_LEVELS:
        return think
    raise InvalidRequest(f'invalid think value: {think!r} (must be "high", "medium", "low", "max", true, or false)')


def think_enabled(think: bool | str | None) -> bool:
    return think is True or think in THINK_LEVELS


def think_level(think: bool | str | None) -> str:
    """The template's ``.ThinkLevel``: the level given, "medium" for plain true (as Ollama)."""
    if isinstance(think, str):
        return think
    return "medium" if think is True else ""


# ---- which templates think, and with which tags ---------------------------------------------------


def _pipe_fields(pipe: Pipeline) -> list[list[str]]:
    fields: list[list[str]] = []

    def visit(op: Operand) -> None:
        if op.kind == "field":
            fields.append(list(op.value))
        elif op.kind == "pipeline":
            for cmd in op.value.commands:
                for inner in cmd.args:
                    visit(inner)

    for cmd in pipe.commands:
        for op in cmd.args:
            visit(op)
    return fields


def _mentions(pipe: Pipeline, name: str) -> bool:
    return any(f and f[0] == name for f in _pipe_fields(pipe))


def infer_tags(template: Template) -> tuple[str, str]:
    """Ollama's InferTags: every ``.Thinking`` inside ``range .Messages`` sets the tags from the first
    and last text of the list that holds it; the last one wins."""
    tags = ["", ""]

    def visit(nodes: Sequence[Node], in_messages: bool) -> None:
        def take() -> None:
            if isinstance(nodes[0], Text):
                tags[0] = nodes[0].text.strip()
            if isinstance(nodes[-1], Text):
                tags[1] = nodes[-1].text.strip()

        for node in nodes:
            if isinstance(node, (Action, Branch)) and in_messages and _mentions(node.pipe, "Thinking"):
                take()
            if isinstance(node, Branch):
                # the nearest enclosing range must be the one over .Messages
                visit(node.body, _mentions(node.pipe, "Messages") if node.kind == "range" else in_messages)
                if node.else_body:
                    visit(node.else_body, in_messages)

    visit(template.root, False)
    return tags[0], tags[1]


# ---- splitting a reply ---------------------------------------------------------------------------


class ThinkingParser:
    """Feed it the reply piece by piece; ``add`` returns (thinking, content) safe to hand on now.

    Whitespace after the opening and closing tags is dropped; text that might be a partial tag is held
    back. A reply that does not start with the opening tag has no trace."""

    def __init__(self, opening: str, closing: str) -> None:
        self.opening, self.closing = opening, closing
        self.state = "looking"  # looking -> eating -> thinking -> after -> done
        self.acc = ""

    def add(self, text: str) -> tuple[str, str]:
        self.acc += text
        thinking: list[str] = []
        content: list[str] = []
        while True:
            more = self._eat(thinking, content)
            if not more:
                return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """A reply cut off mid-trace: what was held back is trace (or content, before any tag)."""
        rest, self.acc = self.acc, ""
        if self.state in ("thinking", "eating"):
            return rest, ""
        return "", rest

    def _eat(self, thinking: list[str], content: list[str]) -> bool:
        acc = self.acc
        if self.state == "looking":
            trimmed = acc.lstrip()
            if trimmed.startswith(self.opening):
                after = trimmed[len(self.opening) :].lstrip()
                self.acc = after
                self.state = "thinking" if after else "eating"
                return True
            if self.opening.startswith(trimmed):
                return False  # blank, or a partial opening tag: wait
            self.state, self.acc = "done", ""
            content.append(acc)
            return False
        if self.state == "eating":
            trimmed = acc.lstrip()
            self.acc = trimmed
            if trimmed:
                self.state = "thinking"
                return True
            return False
        if self.state == "thinking":
            if self.closing in acc:
                trace, rest = acc.split(self.closing, 1)
                rest = rest.lstrip()
                self.acc = ""
                self.state = "done" if rest else "after"
                thinking.append(trace)
                content.append(rest)
                return False
            hold = partial_suffix(acc, (self.closing,))
            thinking.append(acc[: len(acc) - hold])
            self.acc = acc[len(acc) - hold :]
            return False
        if self.state == "after":
            trimmed = acc.lstrip()
            self.acc = ""
            if trimmed:
                self.state = "done"
            content.append(trimmed)
            return False
        self.acc = ""
        content.append(acc)
        return False


# ---- a grammar that waits for the trace to end ----------------------------------------------------


class GrammarGate:
    """When a thinking reply's grammar (``format``) starts: the trace is free text, the answer after
    its closing tag is constrained. Ollama gets there by running the model twice (unconstrained until
    the answer begins, then again with the trace in the prompt and the grammar on); here the decoder
    turns the grammar on for the same sequence the moment the closing tag has been generated.

    ``add`` takes each generated token's text and answers ``FREE`` (keep sampling unconstrained),
    ``CONSTRAIN`` (the trace just closed: the grammar applies from the next token on) or ``RESAMPLE``
    (the reply did not start a trace after all: this token must be sampled again, under the grammar).
    """

    FREE, CONSTRAIN, RESAMPLE = "free", "constrain", "resample"

    def __init__(self, opening: str, closing: str, started: bool) -> None:
        self.opening, self.closing = opening, closing
        self.state = "thinking" if started else "looking"
        self.acc = ""

    def add(self, text: str) -> str:
        if self.state == "answer":
            return self.CONSTRAIN
        self.acc += text
        if self.state == "looking":
            trimmed = self.acc.lstrip()
            if trimmed.startswith(self.opening):
                self.state, self.acc = "thinking", trimmed[len(self.opening):]
            elif self.opening.startswith(trimmed):
                return self.FREE  # blank so far, or a partial opening tag
            else:
                self.state = "answer"
                return self.RESAMPLE
        if self.closing in self.acc:
            self.state = "answer"
            return self.CONSTRAIN
        self.acc = self.acc[-len(self.closing):]  # enough to find a tag split across tokens
        return self.FREE
