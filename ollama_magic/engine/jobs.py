"""What goes into a runner and what comes out: the seam between the engine and its runners."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..errors import EngineError
from .sampling import Sampling

__all__ = ["EngineError", "Finished", "GenerationJob", "LoadOptions", "Token"]


@dataclass(frozen=True)
class LoadOptions:
    """The options that need a fresh context when they change (Ollama's ``api.Runner``)."""

    num_ctx: int
    num_batch: int
    num_gpu: int
    num_thread: int
    use_mmap: bool
    embedding: bool = False
    #: sequences decoded together (OLLAMA_NUM_PARALLEL); the context holds num_ctx tokens for each
    num_parallel: int = 1


@dataclass
class GenerationJob:
    tokens: list[int]
    sampling: Sampling
    stop: list[str]
    num_predict: int
    #: tokens at the prompt's start a context shift keeps (the engine resolves BOS and -1: see
    #: ``context_window.kept_at_start``)
    num_keep: int = 4
    #: when the sequence fills its slot: discard half of what follows ``num_keep`` and go on (Ollama's
    #: ``shift``), else end with done_reason "length"
    shift: bool = True
    grammar: str | None = None
    #: False for non-streaming calls: text is handed over once at the end, so the caller's thread is
    #: not woken for every token (each wake-up competes with llama.cpp's threads for the cores)
    stream: bool = True
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class Token:
    text: str


@dataclass
class Finished:
    done_reason: str
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    context: list[int]
