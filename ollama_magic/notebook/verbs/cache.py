"""``%ollama cache [clear [MODEL]]``: the column cache's size and hit counts per model, and clearing it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ...formatting import human_bytes
from ...store.column_cache import ColumnCache, normal_name
from . import Text, parse, verb

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..session import NotebookSession


@verb("cache", "[clear [MODEL]]: the column cache (--over answers, %embed vectors) per model, or clear it")
def cache(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Any:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("action", nargs="?", choices=["clear"])
        p.add_argument("model", nargs="?", help="with clear: only this model's entries")

    args = parse("cache", argv, setup)
    with ColumnCache() as store:
        if args.action == "clear":
            model = normal_name(args.model) if args.model else None
            removed = store.clear(model)
            return Text(f"removed {removed} cached entries" + (f" of {model}" if model else ""))
        frame = store.stats()
        used = store.total_bytes()
        print(f"column cache {store.path}: {human_bytes(used)} of {human_bytes(store.max_bytes)}, "
              f"{int(frame.entries.sum())} entries")
    total = frame.hits + frame.misses
    frame["hit_rate"] = (frame.hits / total.where(total > 0)).round(3)
    return frame


__all__ = ["cache"]
