"""``--over EXPR`` (with ``--workers``, ``--no-cache``, ``--refresh``): the message asked for every row of
a column, concurrently; the cell's value is a Series (or a DataFrame with ``-f json``), and nothing
enters the thread (see ``over.py``)."""

from __future__ import annotations

import argparse
from typing import Any

from ...errors import InvalidRequest
from ..chat import interpolate
from .base import NOT_ANSWERED, Cell, Feature
from .output import schema_of

_ROW = "\x00row\x00"  # {text} survives interpolation of the notebook's own {names}


class Over(Feature):
    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--over", metavar="EXPR",
                            help="ask the message for every row of this column ({text} is the row); returns a Series")
        parser.add_argument("--workers", type=int, default=4,
                            help="with --over: requests in flight at once (default 4)")
        parser.add_argument("--no-cache", action="store_true",
                            help="with --over: neither read nor write the column cache")
        parser.add_argument("--refresh", action="store_true",
                            help="with --over: ask every row again and overwrite its cached answer")

    def check(self, args: argparse.Namespace) -> None:
        if args.over is None:
            for flag, given in (("--workers", args.workers != 4), ("--no-cache", args.no_cache),
                                ("--refresh", args.refresh)):
                if given:
                    raise InvalidRequest(f"{flag} goes with --over")
            return
        if args.tools or args.context or args.vars:
            raise InvalidRequest("--over asks each row on its own: it cannot be combined with --tools, --context or "
                                 "--vars")
        if args.format not in ("markdown", "text", "json"):
            raise InvalidRequest("--over answers are text or json (-f json); not " + args.format)

    def answer(self, args: argparse.Namespace, cell: Cell) -> Any:
        if args.over is None:
            return NOT_ANSWERED
        from ..over import ROW_FIELD, chat_over

        try:
            values = eval(args.over, dict(cell.namespace), dict(cell.local_ns or {}))  # noqa: S307 - the user's own
        except Exception as exc:  # noqa: BLE001 - shown as one line
            raise InvalidRequest(f"--over {args.over}: {type(exc).__name__}: {exc}") from None
        text = cell.text.strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]  # the line form: %chat --over col "the prompt"
        prompt = interpolate(text.replace(ROW_FIELD, _ROW), cell.namespace).replace(_ROW, ROW_FIELD)
        return chat_over(values, prompt, model=cell.model, backend=cell.session.backend, system=args.system,
                         options=cell.options, fmt="json" if args.format == "json" else "text",
                         schema=schema_of(args.schema, cell.namespace), workers=args.workers,
                         cache=not args.no_cache, refresh=args.refresh,
                         choices=args.choices)


FEATURE = Over()

__all__ = ["FEATURE"]
