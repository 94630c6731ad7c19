"""llama.cpp's (and libmtmd's) log lines go to Python logging, not into notebook cells.

Installed once, at import: ``llama_log_set`` is not thread-safe (llama.h), so it must never run while a
model loads or decodes. Every module that loads a model imports this one first (``llama_context``),
and ``vision`` routes libmtmd's log through the same callback.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from contextlib import contextmanager
from typing import Iterator

import llama_cpp

llama_log = logging.getLogger("ollama_magic.llama_cpp")

__all__ = ["captured_lines", "llama_log", "route_llama_log"]

_capture = threading.local()


@contextmanager
def captured_lines(forward: bool = True) -> Iterator[list[str]]:
    """Every llama.cpp log line emitted on this thread meanwhile, at every level: how the engine reads
    llama.cpp's own reports (its buffer sizes at load) without raising the logger's level. Loads run
    on one thread each, so a capture sees its own load and nobody else's. ``forward=False`` keeps the
    lines from the logger too: a dry run (the planner's ``no_alloc`` probe) is not a load to report."""
    outer = getattr(_capture, "lines", None), getattr(_capture, "forward", True)
    lines: list[str] = []
    _capture.lines, _capture.forward = lines, forward
    try:
        yield lines
    finally:
        _capture.lines, _capture.forward = outer


@llama_cpp.llama_log_callback
def route_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """ggml levels: 1 debug, 2 info, 3 warn, 4 error. llama.cpp's warnings are notices about its own
    choices (e.g. the full-size SWA cache), so they are logged at INFO; errors stay errors."""
    message = text.decode("utf-8", errors="replace").rstrip()
    lines = getattr(_capture, "lines", None)
    if lines is not None and message:
        lines.append(message)
        if not _capture.forward:
            return
    if message:
        llama_log.log({4: logging.ERROR, 3: logging.INFO}.get(level, logging.DEBUG), message)


llama_cpp.llama_log_set(route_llama_log, ctypes.c_void_p(0))
