"""``--choices A,B,C``: each label's probability as the reply, read from the logits instead of generating
one (see ``notebook/choices.py``). On one text the cell's value is a ``Classification`` shown as bars;
with ``--over`` it is a DataFrame (the ``over`` feature passes the labels on). Nothing enters the thread."""

from __future__ import annotations

import argparse
from typing import Any

from ...errors import InvalidRequest
from ..chat import interpolate
from ..choices import parse_labels
from .base import NOT_ANSWERED, Cell, Feature

#: what a label's probability cannot go with: (the flag's attribute, its default, as the user writes it)
_EXCLUSIVE = (("tools", [], "--tools"), ("context", 0, "--context"), ("vars", [], "--vars"), ("image", [], "--image"),
              ("logprobs", None, "--logprobs"), ("dry_run", False, "--dry-run"), ("schema", None, "--schema"),
              ("think", None, "--think"))


class Choices(Feature):
    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--choices", type=parse_labels, metavar="A,B,C",
                            help="score these labels instead of generating a reply: each one's probability (bars; "
                            "with --over a DataFrame with label, p_<label> and entropy columns); quote a label "
                            "holding commas or spaces: --choices '\"very good\",bad'")

    def check(self, args: argparse.Namespace) -> None:
        if args.choices is None:
            return
        clashing = [flag for name, default, flag in _EXCLUSIVE if getattr(args, name) != default]
        if args.format not in ("markdown", "text"):
            clashing.append(f"-f {args.format}")
        if clashing:
            raise InvalidRequest(f"--choices scores the labels and generates nothing: it cannot be combined with "
                                 f"{', '.join(clashing)}")

    def answer(self, args: argparse.Namespace, cell: Cell) -> Any:
        if args.choices is None or args.over is not None:  # with --over, the over feature asks (labels included)
            return NOT_ANSWERED
        from ..choices import classify

        return classify(interpolate(cell.text, cell.namespace), args.choices, model=cell.model,
                        backend=cell.session.backend, system=args.system, options=cell.options)


FEATURE = Choices()

__all__ = ["FEATURE"]
