"""What runs: prompt templates, the llama.cpp runner, the scheduler and the Engine facade.

``Engine`` is imported on first use, so the parts that need no llama.cpp (templates, capabilities)
can be used by the CLI without loading it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Engine"]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
