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
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..errors import InvalidRequest

if TYPE_CHECKING:
    from ..backends import Backend

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
    """A JSON schema that admits exactly one call ``{"name": ..., "arguments": {...}}`` of one tool: the
    engine's own (``engine/toolcalls.py``), for backends that cannot take ``tool_choice``."""
    from ..engine.toolcalls import forced_call_schema

    return forced_call_schema(tool_schemas(functions))


def takes_tool_choice(backend: Backend) -> bool:
    """Whether ``backend.chat`` forces a call itself (``tool_choice``, the in-kernel Engine): it knows the
    template's tool tag and puts it in front of the call, so its parser reads the reply as a call."""
    import inspect

    try:
        return "tool_choice" in inspect.signature(backend.chat).parameters
    except (TypeError, ValueError):
        return False


def _forced(backend: Backend, functions: Sequence[Callable[..., Any]]) -> dict[str, Any]:
    """The chat arguments that force one call: the engine's ``tool_choice``, else its schema as ``format``."""
    if takes_tool_choice(backend):
        return {"tool_choice": "required"}
    return {"format": required_call_format(functions)}


def _call_in_content(response: Any, names: Sequence[str]) -> list[Any]:
    """A call forced by ``format`` whose template starts calls with a tag (``<tool_call>``) comes back as
    bare JSON content: the server's parser waits for the tag. The grammar made it a call, so read it as one."""
    import ollama

    try:
        value = json.loads(response.message.content or "")
    except json.JSONDecodeError:
        return []
    if not isinstance(value, dict) or value.get("name") not in names or not isinstance(value.get("arguments"), dict):
        return []
    response.message.content = ""
    return [ollama.Message.ToolCall(function=ollama.Message.ToolCall.Function(name=value["name"],
                                                                                arguments=value["arguments"]))]


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
    backend: Backend, model: str, messages: list[dict[str, Any]], functions: Sequence[Callable[..., Any]], *,
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
                                **(_forced(backend, functions) if force else {}))
        asked = list(response.message.tool_calls or [])
        if force and not asked:
            asked = _call_in_content(response, list(by_name))
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


__all__ = ["ToolCall", "ask_before", "required_call_format", "resolve", "run_with_tools", "takes_tool_choice",
           "tool_schemas"]
