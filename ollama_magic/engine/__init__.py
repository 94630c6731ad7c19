"""What runs: prompt templates, the llama.cpp runner, the scheduler and the Engine facade."""

from .engine import Engine

__all__ = ["Engine"]
