"""What goes into a runner and what comes out: the seam between the engine and its runners."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

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
    #: the vision projector (mmproj GGUF) loaded beside the model, if it has one
    projector: str = ""


@dataclass
class GenerationJob:
    tokens: list[int]
    sampling: Sampling
    stop: list[str]
    num_predict: int
    num_keep: int = 4
    grammar: str | None = None
    #: False for non-streaming calls: text is handed over once at the end, so the caller's thread is
    #: not woken for every token (each wake-up competes with llama.cpp's threads for the cores)
    stream: bool = True
    cancel: threading.Event = field(default_factory=threading.Event)
    #: a prompt with images (``vision.MediaPrompt``): ``tokens`` is then its flat list, image
    #: positions included, and the decoder evaluates its image parts when the job gets a slot
    media: Any = None


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
