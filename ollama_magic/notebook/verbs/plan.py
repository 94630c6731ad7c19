"""``%ollama plan``: how a model would load on this machine's devices, before anything loads."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ...errors import InvalidRequest
from . import parse, verb

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..session import NotebookSession


@verb("plan", "MODEL [--num-ctx N] [--parallel P] [--kv-cache f16|q8_0|q4_0]: its memory per device, "
              "loading nothing")
def plan(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Any:
    def setup(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", nargs="?")
        p.add_argument("--num-ctx", type=int)
        p.add_argument("--parallel", type=int)
        p.add_argument("--kv-cache", choices=["f16", "q8_0", "q4_0"])

    args = parse("plan", argv, setup)
    if session.remote is not None:
        raise InvalidRequest("%ollama plan plans the in-kernel engine's loads: a remote server places its "
                             "own (%ollama disconnect to plan here)")
    frame = session.engine.plan(args.model or session.chat_model, num_ctx=args.num_ctx,
                                parallel=args.parallel, kv_cache_type=args.kv_cache)
    return _with_caption(frame)


def _with_caption(frame: Any) -> Any:
    """The plan's DataFrame with a caption line (in ``attrs["caption"]`` and above its HTML table):
    the table alone would hide the fitted context, the evictions and the notes kept in ``attrs``."""
    import html

    a = frame.attrs
    caption = (f"{a['model']}: num_ctx {a['num_ctx']} x {a['parallel']} slots, {a['num_gpu']}/{a['layers']} "
               f"layers on devices; largest num_ctx that fits: {a['largest_num_ctx'] or 'none'}"
               + (f"; would unload {', '.join(a['evicts'])}" if a["evicts"] else "")
               + "".join(f"; {note}" for note in a["notes"]))
    frame.attrs["caption"] = caption
    table = type(frame)._repr_html_
    frame._repr_html_ = lambda: f"<p>{html.escape(caption)}</p>" + (table(frame) or "")
    return frame
