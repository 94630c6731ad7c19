"""What goes into a runner and what comes out: the seam between the engine and its runners."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..errors import EngineError
from .logprobs import TokenProb
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
    num_keep: int = 4
    grammar: str | None = None
    #: False for non-streaming calls: text is handed over once at the end, so the caller's thread is
    #: not woken for every token (each wake-up competes with llama.cpp's threads for the cores)
    stream: bool = True
    cancel: threading.Event = field(default_factory=threading.Event)
    #: report each token's log probability, with this many likeliest alternatives (0..20)
    logprobs: bool = False
    top_logprobs: int = 0
    #: (opening, closing) tags of a thinking trace and whether the prompt opened it: the grammar then
    #: constrains only what follows the trace (see ``thinking.GrammarGate``)
    trace_tags: tuple[str, str] | None = None
    trace_started: bool = False


@dataclass
class Token:
    text: str
    #: the log probabilities of the tokens whose text this is (when the job asked for them)
    logprobs: list[TokenProb] = field(default_factory=list)


@dataclass
class Finished:
    done_reason: str
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    context: list[int]
