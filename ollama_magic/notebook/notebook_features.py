"""The ``%%chat`` hooks of the notebook features: what the magic hands to over.py, context.py,
tools.py and output_forms.py, so magics.py stays a flag parser with one call per feature."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from ..errors import InvalidRequest
from .chat import interpolate
from .display import ChatReply, strip_fence
from .output_forms import insert_code_cell

_ROW = "\x00row\x00"  # {text} survives interpolation of the notebook's own {names}


def validate(args: Any) -> None:
    """Flags that only mean something together: one clear line instead of being silently ignored."""
    if args.over is None and args.workers != 4:
        raise InvalidRequest("--workers goes with --over")
    if args.schema is not None and args.format != "json":
        raise InvalidRequest("--schema shapes a JSON reply: use it with -f json")
    if not args.tools and (args.confirm or args.tool_choice != "auto"):
        raise InvalidRequest("--confirm and --tool-choice go with --tools")


def over(session: Any, args: Any, text: str, namespace: Mapping[str, Any], local_ns: Mapping[str, Any] | None,
         model: str, options: dict[str, Any]) -> Any:
    """``--over EXPR``: the message for every row; nothing enters the thread."""
    from .over import ROW_FIELD, chat_over

    if args.tools or args.context or args.vars:
        raise InvalidRequest("--over asks each row on its own: it cannot be combined with --tools, --context or --vars")
    if args.format not in ("markdown", "text", "json"):
        raise InvalidRequest("--over answers are text or json (-f json); not " + args.format)
    try:
        values = eval(args.over, dict(namespace), dict(local_ns or {}))  # noqa: S307 - the user's own expression
    except Exception as exc:  # noqa: BLE001 - shown as one line
        raise InvalidRequest(f"--over {args.over}: {type(exc).__name__}: {exc}") from None
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]  # the line form: %chat --over col "the prompt"
    prompt = interpolate(text.replace(ROW_FIELD, _ROW), namespace).replace(_ROW, ROW_FIELD)
    return chat_over(values, prompt, model=model, backend=session.backend, system=args.system, options=options,
                     fmt="json" if args.format == "json" else "text", schema=schema_of(args.schema, namespace),
                     workers=args.workers)


def schema_of(value: str | None, namespace: Mapping[str, Any]) -> dict[str, Any] | None:
    """``--schema``: JSON text, or the name of a notebook variable holding a dict or a pydantic model."""
    if value is None:
        return None
    if value.isidentifier() and value in namespace:
        obj = namespace[value]
        if hasattr(obj, "model_json_schema"):
            return obj.model_json_schema()
        if isinstance(obj, Mapping):
            return dict(obj)
        raise InvalidRequest(f"--schema {value}: expected a dict or a pydantic model, got {type(obj).__name__}")
    try:
        schema = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"--schema: neither a variable nor JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise InvalidRequest("--schema must be a JSON object")
    return schema


def with_context(session: Any, args: Any, text: str, namespace: Mapping[str, Any], model: str,
                 options: Mapping[str, Any]) -> str:
    """``--context N`` / ``--vars a,b``: the message with the notebook context in front, shown collapsed."""
    if not args.context and not args.vars:
        return text
    from IPython.display import display

    from .context import CONTEXT_SHARE, SentWith, build_context, model_context_length, token_counter

    backend = session.backend
    counter = token_counter(backend, model)
    budget = int(model_context_length(backend, model, options) * CONTEXT_SHARE)
    context = build_context(session.shell, namespace, cells=args.context, names=args.vars, count_tokens=counter,
                            budget=budget)
    if context:
        display(SentWith(context))
    return context.wrap(text)


def tools(args: Any, namespace: Mapping[str, Any]) -> list[Callable[..., Any]]:
    if not args.tools:
        return []
    from .tools import resolve

    return resolve(args.tools, namespace)


def confirm(args: Any) -> Callable[[str], bool] | None:
    if not args.confirm:
        return None
    from .tools import ask_before

    return ask_before


def after_reply(shell: Any, reply: Any, fmt: str, notice: Callable[[str], None]) -> None:
    """``-f code``: the code also goes into a new cell below."""
    if fmt == "code" and isinstance(reply, ChatReply) and not reply.interrupted:
        insert_code_cell(shell, strip_fence(str(reply)), notice)


__all__ = ["after_reply", "confirm", "over", "tools", "validate", "with_context"]
