"""``-f/--format`` and ``--schema``: the reply's form (markdown, text, code, json, html, math), a JSON
schema it must follow, and for ``-f code`` a new cell below holding the code."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, Mapping

from ...errors import InvalidRequest
from ..chat import FORMATS, ChatTurn
from ..display import ChatReply, strip_fence
from ..output_forms import insert_code_cell
from .base import Cell, Feature

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell


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


class Output(Feature):
    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-f", "--format", choices=FORMATS, default="markdown",
                            help="markdown (default), text, code (a code block, also put in a new cell below), "
                            "json (the parsed object), html, math (LaTeX)")
        parser.add_argument("--schema", metavar="JSON|VAR",
                            help="with -f json: a JSON schema the reply must follow (JSON, or a variable holding a "
                            "dict or a pydantic model)")

    def check(self, args: argparse.Namespace) -> None:
        if args.schema is not None and args.format != "json":
            raise InvalidRequest("--schema shapes a JSON reply: use it with -f json")

    def apply(self, turn: ChatTurn, args: argparse.Namespace, cell: Cell) -> None:
        turn.fmt = args.format
        turn.schema = schema_of(args.schema, cell.namespace)

    def after(self, reply: Any, args: argparse.Namespace, cell: Cell) -> None:
        """``-f code``: the code also goes into a new cell below."""
        after_reply(cell.shell, reply, args.format, _notice)


def after_reply(shell: InteractiveShell, reply: Any, fmt: str, notice: Any) -> None:
    """``-f code``: the code also goes into a new cell below."""
    if fmt == "code" and isinstance(reply, ChatReply) and not reply.interrupted:
        insert_code_cell(shell, strip_fence(str(reply)), notice)


def _notice(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


FEATURE = Output()

__all__ = ["FEATURE", "after_reply", "schema_of"]
