"""Tool calls in a model's reply, found while it streams, as Ollama's ``tools`` package finds them.

The tag that starts a call is read from the template (the first text after ``{{ if .ToolCalls }}``,
e.g. ``<tool_call>``; ``{`` when there is none). Text that could be the start of a call is held back
until it is known either way, so a call's JSON never reaches the caller as content; each complete call
is handed over on its own, with an ``id`` and its ``function.index``. With the ``{`` tag, a reply is a
tool call only if it starts with one (text first means the model answered in prose), as in Ollama.

``tool_choice`` (OpenAI's, which Ollama ignores) is honoured with a grammar: "required" or a named
function forces exactly one call of the allowed tools, with arguments matching their schemas; "none"
leaves the tools out of the prompt and the reply.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Mapping, Sequence

from ..errors import InvalidRequest
from ..types import ToolCall, ToolCallFunction
from .gotemplate import Action, Branch, Node, Template, Text
from .text import partial_suffix

DEFAULT_TAG = "{"


def tool_call_id() -> str:
    """Ollama's form: ``call_`` and eight random lowercase alphanumerics."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "call_" + "".join(secrets.choice(alphabet) for _ in range(8))


def _mentions(node: Branch, name: str) -> bool:
    return any(op.kind == "field" and name in op.value for cmd in node.pipe.commands for op in cmd.args)


def _tool_calls_branch(nodes: Sequence[Node]) -> Branch | None:
    for node in nodes:
        if isinstance(node, Branch):
            if node.kind == "if" and _mentions(node, "ToolCalls"):
                return node
            for body in (node.body, node.else_body or []):
                found = _tool_calls_branch(body)
                if found is not None:
                    return found
    return None


def _first_text(nodes: Sequence[Node]) -> Text | None:
    """The first non-blank text, stopping at an action (Ollama's findTextNode)."""
    for node in nodes:
        if isinstance(node, Text):
            if node.text.strip():
                return node
        elif isinstance(node, Branch):
            return _first_text(node.body) or (_first_text(node.else_body) if node.else_body else None)
        elif isinstance(node, Action):
            return None
    return None


def tool_call_tag(template: Template | None, jinja_source: str | None = None) -> str:
    """The text that starts a tool call in this model's replies."""
    if template is None:
        return "<tool_call>" if jinja_source and "<tool_call>" in jinja_source else DEFAULT_TAG
    branch = _tool_calls_branch(template.root)
    text = _first_text(branch.body) if branch is not None else None
    if text is None:
        return DEFAULT_TAG
    tag = text.text.replace("\r\n", "\n").split("{", 1)[0].strip()
    return tag or DEFAULT_TAG


def _tool_name(tool: Mapping[str, Any]) -> str:
    return str((tool.get("function") or {}).get("name") or "")


class ToolCallParser:
    """Feed it the reply piece by piece; ``add`` returns (complete calls, content safe to show)."""

    def __init__(self, tools: Sequence[Mapping[str, Any]], tag: str = DEFAULT_TAG) -> None:
        self.tag = tag
        self.names = [n for n in map(_tool_name, tools) if n]
        self.buffer = ""
        self.state = "looking"  # looking -> calling -> done
        self.count = 0

    def add(self, text: str) -> tuple[list[ToolCall], str]:
        if self.state == "done":
            return [], text
        self.buffer += text
        content = ""
        if self.state == "looking":
            index, found = self._find_tag()
            if index < 0:
                content, self.buffer = self.buffer, ""
            else:
                content, self.buffer = self.buffer[:index], self.buffer[index:]
            if self.tag in ("{", "[") and content.strip():
                self.state = "done"  # the model answered in prose: nothing after this is a call
                content, self.buffer = content + self.buffer, ""
                return [], content
            if not found:
                return [], content
            self.state = "calling"
        calls = []
        while (call := self._next_call()) is not None:
            calls.append(call)
        if self._closed():
            self.state = "done"
            content, self.buffer = self.buffer, ""
        return calls, content

    def finish(self) -> str:
        """What is left when the reply ends: held-back text that turned out not to be a call."""
        rest, self.buffer = self.buffer, ""
        if self.count == 0 and (self.state == "looking" or self.tag in ("{", "[")):
            return rest
        return ""

    def _find_tag(self) -> tuple[int, bool]:
        index = self.buffer.find(self.tag)
        if index >= 0:
            return index, True
        hold = partial_suffix(self.buffer, (self.tag,))
        return (len(self.buffer) - hold, False) if hold else (-1, False)

    def _find_name(self) -> tuple[str | None, int]:
        longest = max(map(len, self.names), default=0)
        for i in range(1, min(len(self.buffer), longest) + 1):
            tail = self.buffer[-i:]
            if any(len(tail) < len(n) and n.startswith(tail) for n in self.names):
                return None, 0  # could still grow into a longer name
        best, start = None, -1
        for name in self.names:
            pos = self.buffer.find(name)
            if pos < 0:
                continue
            if best is not None and (pos > start or (pos == start and len(name) <= len(best))):
                continue
            best, start = name, pos
        return (best, start + len(best)) if best is not None else (None, 0)

    def _next_call(self) -> ToolCall | None:
        name, end = self._find_name()
        if name is None:
            return None
        found = _find_arguments(name, self.buffer)
        if found is None:
            return None
        arguments, closing = found
        self.buffer = self.buffer[max(end, closing) :]
        call = ToolCall(id=tool_call_id(), function=ToolCallFunction(index=self.count, name=name, arguments=arguments))
        self.count += 1
        return call

    def _closed(self) -> bool:
        if self.tag not in ("{", "["):
            return False
        open_, close = self.tag, "}" if self.tag == "{" else "]"
        depth, in_string, escaped = 0, False, False
        for ch in self.buffer:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = not in_string
            elif not in_string and ch == open_:
                depth += 1
            elif not in_string and ch == close:
                depth -= 1
                if depth == 0:
                    return True
        return False


def _as_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _arguments_in(obj: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, bool]:
    if "name" in obj:
        for key in ("arguments", "parameters"):
            args = _as_object(obj.get(key))
            if args is not None:
                return args, True
        return None, True
    args = _as_object(obj.get(name))
    if args is not None:
        return args, True
    for value in obj.values():
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, dict):
                args, found = _arguments_in(child, name)
                if found:
                    return args, True
    return None, False


def _find_arguments(name: str, buffer: str) -> tuple[dict[str, Any], int] | None:
    """The first complete JSON object in ``buffer`` holding the call's arguments, and where it ends."""
    start, depth, in_string, escaped = -1, 0, False, False
    for i, ch in enumerate(buffer):
        if escaped:
            escaped = False
            continue
        if ch == "\\":
            escaped = True
            continue
        if ch == '"':
            in_string = not in_string
            continue
        if in_string:
            continue
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0 and start >= 0:
                try:
                    data = json.loads(buffer[start : i + 1])
                except ValueError:
                    start = -1
                    continue
                if not isinstance(data, dict):
                    start = -1
                    continue
                args, found = _arguments_in(data, name)
                return (args if found and args is not None else ({} if found else data)), i + 1
            depth = max(depth, 0)
    return None


def parse_tool_calls(text: str, tools: Sequence[Mapping[str, Any]], tag: str = DEFAULT_TAG) -> tuple[list[ToolCall], str]:
    """A whole reply at once: (calls, content), the same rule as the streaming parser."""
    parser = ToolCallParser(tools, tag)
    calls, content = parser.add(text)
    return calls, content + parser.finish()


# ---- tool_choice ------------------------------------------------------------------------------


def resolve_tool_choice(tool_choice: Any, tools: Sequence[Mapping[str, Any]] | None) -> tuple[str, list[Mapping[str, Any]]]:
    """-> (mode, the tools a forced call may use); mode is "auto", "none" or "required"."""
    tools = list(tools or [])
    if tool_choice in (None, "", "auto"):
        return "auto", tools
    if tool_choice == "none":
        return "none", []
    if tool_choice == "required":
        if not tools:
            raise InvalidRequest('tool_choice "required" needs tools')
        return "required", tools
    if isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
        chosen = [t for t in tools if _tool_name(t) == name]
        if not chosen:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not one of the tools")
        return "required", chosen
    raise InvalidRequest(f'invalid tool_choice {tool_choice!r}: use "auto", "none", "required" or '
                         '{"type": "function", "function": {"name": ...}}')


def forced_call_schema(tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call of one of ``tools``: {"name": ..., "arguments": {...}}."""
    variants = []
    for tool in tools:
        fn = tool.get("function") or {}
        params = fn.get("parameters") or {"type": "object"}
        variants.append({
            "type": "object",
            "properties": {"name": {"const": fn.get("name")}, "arguments": params},
            "required": ["name", "arguments"],
        })
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def forced_call_grammar(tools: Sequence[Mapping[str, Any]], tag: str) -> str:
    """GBNF for one forced call: the template's tag (unless it is ``{``), then the call's JSON."""
    from .grammar import schema_grammar

    grammar = schema_grammar(forced_call_schema(tools))
    if tag in ("{", "["):
        return grammar
    body = grammar.replace("root ::=", "call ::=", 1)
    return f"root ::= {json.dumps(tag)} space call\n{body}"
