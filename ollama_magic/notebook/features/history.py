"""``--max-history N``: send at most the last N exchanges of the thread."""

from __future__ import annotations

import argparse

from ..chat import ChatTurn
from .base import Cell, Feature


class MaxHistory(Feature):
    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--max-history", type=int, metavar="N",
                            help="send at most the last N exchanges of the thread")

    def apply(self, turn: ChatTurn, args: argparse.Namespace, cell: Cell) -> None:
        turn.max_history = args.max_history


FEATURE = MaxHistory()

__all__ = ["FEATURE"]
