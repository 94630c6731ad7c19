"""``--tools f,g`` (with ``--confirm`` and ``--tool-choice``): notebook functions the model may call;
the calls run in the kernel (see ``tools.py``)."""

from __future__ import annotations

import argparse

from ...errors import InvalidRequest
from ..chat import ChatTurn
from .base import Cell, Feature
from .notebook_context import names


class Tools(Feature):
    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tools", type=names, default=[], metavar="F,G",
                            help="notebook functions the model may call; the calls run in the kernel")
        parser.add_argument("--confirm", action="store_true", help="with --tools: ask before each call runs")
        parser.add_argument("--tool-choice", choices=("auto", "required"), default="auto",
                            help="with --tools: required makes the first answer a tool call (for small models)")

    def check(self, args: argparse.Namespace) -> None:
        if not args.tools and (args.confirm or args.tool_choice != "auto"):
            raise InvalidRequest("--confirm and --tool-choice go with --tools")

    def apply(self, turn: ChatTurn, args: argparse.Namespace, cell: Cell) -> None:
        if not args.tools:
            return
        from ..tools import ask_before, resolve

        turn.tools = resolve(args.tools, cell.namespace)
        turn.tool_choice = args.tool_choice
        turn.confirm = ask_before if args.confirm else None


FEATURE = Tools()

__all__ = ["FEATURE"]
