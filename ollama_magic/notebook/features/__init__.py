"""The ``%%chat`` features, listed once: each declares its flags, checks and effect in its own module
(``base.Feature``); the magic runs their hooks in this order."""

from __future__ import annotations

from . import choices, docs, history, image, notebook_context, output, over, tools
from .base import NOT_ANSWERED, Cell, Feature

FEATURES: tuple[Feature, ...] = (
    output.FEATURE,            # -f/--format, --schema
    history.FEATURE,           # --max-history
    over.FEATURE,              # --over, --workers
    choices.FEATURE,           # --choices (with --over: passed on by over)
    tools.FEATURE,             # --tools, --confirm, --tool-choice
    image.FEATURE,             # --image
    docs.FEATURE,              # --docs, -k: before --context, which wraps the message
    notebook_context.FEATURE,  # --context, --vars: last, since it may load the model to count tokens
)

__all__ = ["FEATURES", "NOT_ANSWERED", "Cell", "Feature"]
