"""A cell's error as the user reads it: plain traceback text, without colours or IPython's own frames.

A leaf: the cell log and the error help both format errors with it, and neither imports the other.
"""

from __future__ import annotations

import os
import traceback
from types import TracebackType

_IPYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__import__("IPython").__file__)))


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Skip IPython's own frames (run_code, exec) at the top of the traceback."""
    while tb is not None and tb.tb_next is not None and \
            os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_IPYTHON_DIR + os.sep + "IPython"):
        tb = tb.tb_next
    return tb


def format_error(error: BaseException) -> str:
    """The plain traceback text of ``error``, as a user reads it (no ANSI colours, no IPython frames)."""
    if isinstance(error, SyntaxError):
        return "".join(traceback.format_exception_only(type(error), error)).rstrip("\n")
    return "".join(traceback.format_exception(type(error), error, _user_frames(error.__traceback__))).rstrip("\n")


__all__ = ["format_error"]
