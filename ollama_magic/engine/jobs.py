"""What goes into a runner and what comes out: the seam between the engine and its runners."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import EngineError
from .logprobs import TokenProb
from .sampling import Sampling

__all__ = ["EngineError", "Finished", "GenerationJob", "JobOutput", "LoadOptions", "Queued", "Token"]


class JobOutput(queue.Queue):  # type: ignore[type-arg]
    """A job's results, in order. Besides a blocking ``get`` for a thread, ``when_ready`` tells a
    waiter that holds no thread (the HTTP server's event loop) that the first result has arrived."""

    def __init__(self) -> None:
        super().__init__()
        self._listen_lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._arrived = False

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        if self._arrived:  # listeners are only added before the first item: none to call
            return
        with self._listen_lock:
            self._arrived = True
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            try:
                listener()
            except Exception:  # noqa: BLE001 - a waiter's failure must not stop the model's thread
                logging.getLogger("ollama_magic").exception("a job output listener failed")

    def when_ready(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the thread that puts, or now) once something has been put."""
        with self._listen_lock:
            if not self._arrived:
                self._listeners.append(callback)
                return
        callback()


@dataclass
class Queued:
    """Passed along the engine's chunk iterators once a job waits on its model: a front end can stop
    iterating there, wait for ``output.when_ready`` without a thread, and carry on."""

    output: JobOutput


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
    #: flash attention, "auto" | "on" | "off" (OLLAMA_FLASH_ATTENTION)
    flash_attn: str = "auto"
    #: the K/V cache's type, "f16" | "q8_0" | "q4_0" (OLLAMA_KV_CACHE_TYPE)
    kv_cache_type: str = "f16"
    #: layers per offload device, in llama.cpp's device order (the planner's split; empty: none offloaded
    #: or llama.cpp's own split)
    tensor_split: tuple[int, ...] = ()
    #: the offload devices (llama.cpp names, see ``devices.Device.name``) the load may use, in order;
    #: empty: the CPU alone. Always listed, never llama.cpp's default (every device): a load that lets
    #: llama.cpp list them reads every RPC worker, and a stopped one aborts the process
    devices: tuple[str, ...] = ()
    #: the model's LoRA adapter files (its ADAPTER layers), loaded with it in this order
    adapters: tuple[str, ...] = ()

    @property
    def projector_offloaded(self) -> bool:
        """Whether libmtmd may put the vision projector on a GPU: it takes the first GPU-type device in
        ggml's registry, whatever the model's device list, so with an RPC worker among the model's
        devices that could be another, or a stopped, worker (a stopped one aborts): the projector then
        stays on the CPU. The runner loads it so and the planner counts it so."""
        return self.num_gpu != 0 and not any(name.startswith("RPC") for name in self.devices)


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
    output: JobOutput = field(default_factory=JobOutput)
    #: report each token's log probability, with this many likeliest alternatives (0..20)
    logprobs: bool = False
    top_logprobs: int = 0
    #: (opening, closing) tags of a thinking trace and whether the prompt opened it: the grammar then
    #: constrains only what follows the trace (see ``thinking.GrammarGate``)
    trace_tags: tuple[str, str] | None = None
    trace_started: bool = False
    #: a prompt with images (``vision.MediaPrompt``): ``tokens`` is then its flat list, image
    #: positions included, and the decoder evaluates its image parts when the job gets a slot
    media: Any = None
    #: labels (token lists) to score after the prompt instead of generating: the decoder feeds each as
    #: if generated and reports its tokens' log probabilities (``Finished.scored``), sampling nothing
    choices: tuple[tuple[int, ...], ...] = ()
    #: the scale of each of the model's LoRA adapters (``lora.lora_scales``); None: the model's own (1.0 each)
    lora: tuple[float, ...] | None = None


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
    #: a choice job's labels' token log probabilities, label by label (see ``GenerationJob.choices``)
    scored: list[list[float]] = field(default_factory=list)
    #: the stop string that ended the reply (None: end of generation, length, or cancelled)
    stop_sequence: str | None = None
