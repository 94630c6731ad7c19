"""``--image PATH|VAR``: images sent with the message (needs a vision model)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from ...errors import InvalidRequest
from ..chat import ChatTurn
from .base import Cell, Feature


def image_arg(value: str, namespace: Mapping[str, Any]) -> Any:
    """``--image VAR`` is the variable's value when the notebook has one by that name, else a path."""
    if value.isidentifier() and value in namespace:
        return namespace[value]
    if not Path(value).expanduser().is_file():
        raise InvalidRequest(f"--image {value}: no notebook variable and no file by that name")
    return Path(value).expanduser()


class Image(Feature):
    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--image", action="append", default=[], metavar="PATH|VAR",
                            help="send an image with the message (a file, or a variable holding a path, bytes, a PIL "
                            "image or a matplotlib figure); repeat for several; needs a vision model")

    def apply(self, turn: ChatTurn, args: argparse.Namespace, cell: Cell) -> None:
        turn.images = [image_arg(value, cell.namespace) for value in args.image]


FEATURE = Image()

__all__ = ["FEATURE", "image_arg"]
