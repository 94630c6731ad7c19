"""``%%chat --tools f,g``: notebook functions as tools the model can call, run in the kernel.

A function's schema comes from its signature, type hints and Google-style docstring, converted by
the ``ollama`` client's own ``convert_function_to_tool`` (so a function works the same here and
with ``ollama.chat(tools=[f])``). The model's calls run here, in the kernel, one at a time; each
result goes back as a ``tool`` message until the model answers in words. Every call and its result
is shown collapsed in the cell; ``--confirm`` asks before each call runs.

Small models rarely decide to call a tool by themselves. ``tool_choice="required"`` (OpenAI's name
for it) constrains the first answer with a grammar to one call of one of the tools.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..errors import InvalidRequest

MAX_ROUNDS = 5
RESULT_LIMIT = 2000


@dataclass
class ToolCall:
    """One call the model asked for, and what running it gave (or why it did not run)."""

    name: str
    arguments: dict[str, Any]
    result: str

    def _repr_html_(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return (f"<details><summary>tool call: <code>{html.escape(self.name)}({html.escape(args)})</code></summary>"
                f"<pre>{html.escape(self.result)}</pre></details>")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        printer.text(f"tool call: {self.name}({args}) -> {self.result}")


def resolve(names: Sequence[str], namespace: Mapping[str, Any]) -> list[Callable[..., Any]]:
    """The notebook functions named by ``--tools``; a missing or non-callable name is one clear error."""
    functions = []
    for name in names:
        if name not in namespace:
            raise InvalidRequest(f"--tools {name}: no function named {name!r} in the notebook")
        if not callable(namespace[name]):
            raise InvalidRequest(f"--tools {name}: {name!r} is a {type(namespace[name]).__name__}, not a function")
        functions.append(namespace[name])
    return functions


def tool_schemas(functions: Sequence[Callable[..., Any]]) -> list[dict[str, Any]]:
    from ollama._utils import convert_function_to_tool

    return [convert_function_to_tool(f).model_dump(exclude_none=True) for f in functions]


def required_call_format(functions: Sequence[Callable[..., Any]]) -> dict[str, Any]:
    """A JSON schema that admits exactly one call ``{"name": ..., "arguments": {...}}`` of one tool."""
    variants = []
    for schema in tool_schemas(functions):
        fn = schema["function"]
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        arguments = {"type": "object", "properties": params.get("properties") or {},
                     "required": list(params.get("required") or [])}
        variants.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": arguments},
                         "required": ["name", "arguments"]})
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def _run_call(function: Callable[..., Any], arguments: dict[str, Any]) -> str:
    try:
        value = function(**arguments)
    except Exception as exc:  # noqa: BLE001 - the model is told, and may try again
        return f"error: {type(exc).__name__}: {exc}"
    text = value if isinstance(value, str) else json.dumps(value, default=str) if _jsonable(value) else repr(value)
    return text if len(text) <= RESULT_LIMIT else text[:RESULT_LIMIT] + "…"


def _jsonable(value: Any) -> bool:
    return isinstance(value, (dict, list, tuple, int, float, bool)) or value is None


def run_with_tools(
    backend: Any, model: str, messages: list[dict[str, Any]], functions: Sequence[Callable[..., Any]], *,
    options: Mapping[str, Any] | None = None, confirm: Callable[[str], bool] | None = None,
    show: Callable[[ToolCall], None] | None = None, tool_choice: str = "auto",
) -> tuple[Any, list[ToolCall]]:
    """Chat until the model answers without calling a tool (at most MAX_ROUNDS calls rounds).

    Returns (the final ChatResponse, the calls made). ``confirm(description)`` returning False
    skips a call and tells the model it was declined."""
    if tool_choice not in ("auto", "required"):
        raise InvalidRequest(f"tool choice {tool_choice!r}: use auto or required")
    by_name = {f.__name__: f for f in functions}
    conversation = list(messages)
    calls: list[ToolCall] = []
    for round_number in range(MAX_ROUNDS + 1):
        force = tool_choice == "required" and round_number == 0
        response = backend.chat(model, conversation, tools=list(functions), stream=False,
                                options=dict(options) if options else None,
                                format=required_call_format(functions) if force else None)
        asked = list(response.message.tool_calls or [])
        if not asked or round_number == MAX_ROUNDS:
            return response, calls
        conversation.append({"role": "assistant", "content": response.message.content or "",
                             "tool_calls": [c.model_dump() for c in asked]})
        for call in asked:
            name, arguments = call.function.name, dict(call.function.arguments or {})
            described = f"{name}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
            if name not in by_name:
                result = f"error: no tool named {name!r}"
            elif confirm is not None and not confirm(described):
                result = "the user declined to run this call"
            else:
                result = _run_call(by_name[name], arguments)
            record = ToolCall(name, arguments, result)
            calls.append(record)
            if show is not None:
                show(record)
            conversation.append({"role": "tool", "content": result, "tool_name": name})
    raise AssertionError("unreachable")


def ask_before(description: str) -> bool:
    """``--confirm``: the user types y to run the call."""
    return input(f"run {description}? [y/N] ").strip().lower() in ("y", "yes")


__all__ = ["ToolCall", "ask_before", "required_call_format", "resolve", "run_with_tools", "tool_schemas"]
