"""Kept for callers of ``add_context_flags``: each ``%%chat`` feature now declares its own flags in
``features/`` (listed once in ``features.FEATURES``)."""

from __future__ import annotations

import argparse

from .features import FEATURES
from .features.notebook_context import names as _names  # noqa: F401 - the old private name


def add_context_flags(p: argparse.ArgumentParser) -> None:
    """The notebook-context features' flags (every feature's but ``-f/--format``, which ``%%chat`` has)."""
    from .features import output

    for feature in FEATURES:
        if feature is output.FEATURE:
            p.add_argument("--schema", metavar="JSON|VAR",
                           help="with -f json: a JSON schema the reply must follow")
        else:
            feature.add_flags(p)


__all__ = ["add_context_flags"]
