"""One module sizes a load: the load options llama.cpp gets, checked, and the bytes the load takes.

This is Ollama's ``llm/memory.go`` analogue (and the part of ``llm/server.go`` that settles
``num_ctx``/``num_batch``): the scheduler makes room for :attr:`LoadPlan.size` before it loads, and
``ps`` reports the same number afterwards, so the two cannot disagree (review R8).

Every load-time number is checked here, before llama.cpp sees it: llama.cpp answers a bad size with
``GGML_ASSERT`` (the process dies) or, through ctypes' silent int32 truncation, with a different model
than was asked for. The rules, and where they follow Ollama:

- ``num_ctx``: below 4 reads as 4, above the model's trained context as the trained context (Ollama's
  ``GetRunner`` and ``NewLlamaServer`` clamp both, with a warning for the second). Zero and negative
  values have no meaning and are refused (Ollama would quietly load 4 tokens), as is a context whose
  cells (``num_ctx`` x parallel) do not fit llama.cpp's 32-bit ``n_ctx``.
- ``num_batch``: above ``num_ctx`` reads as ``num_ctx`` (Ollama: ``min(NumBatch, NumCtx)``). Zero and
  negative values are refused: Ollama passes them on and its runner subprocess fails the load; ours
  runs in this process. Embedding models decode a whole text at once: ``num_batch = num_ctx``.
- ``num_thread``: 0 or negative means "choose" (Ollama uses a value only when it is > 0); above
  ggml's ``GGML_MAX_N_THREADS`` (512) is refused.
- ``num_gpu``: any negative value means "all layers" (Ollama and llama.cpp read ``< 0`` so); above
  the 32-bit ``n_gpu_layers`` is refused. Without GPU offload in this build it is 0.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import psutil

from .. import envconfig
from ..errors import EngineError, InvalidRequest
from ..store.gguf_meta import gguf_header
from . import planner
from .geometry import geometry
from .gpu import total_layers
from .jobs import LoadOptions
from .lora import with_adapters
from .planner import DeviceRoom, LoadPlan

log = logging.getLogger("ollama_magic")

MIN_NUM_CTX = 4  # Ollama's floor
INT32_MAX = 2**31 - 1  # llama_context_params.n_ctx / llama_model_params.n_gpu_layers are 32-bit
MAX_THREADS = 512  # ggml's GGML_MAX_N_THREADS


class _Info(Protocol):
    """What sizing reads of a GGUF header (``store.gguf_meta.GGUFInfo``)."""

    @property
    def context_length(self) -> int | None: ...

    def arch_value(self, key: str) -> Any: ...


class _Record(Protocol):
    """What sizing reads of a model (``store.ModelRecord``)."""

    @property
    def model_path(self) -> Path: ...

    @property
    def projector_paths(self) -> list[Path]: ...

    @property
    def adapter_paths(self) -> list[Path]: ...

    def gguf_info(self) -> Any: ...


def _refuse(name: str, allowed: str, value: Any) -> InvalidRequest:
    return InvalidRequest(f'option "{name}" must be {allowed}, got {value!r}')


def _int(opts: Mapping[str, Any], name: str, default: int) -> int:
    value = opts.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _refuse(name, "an integer", value)
    return value


def context_size(requested: int, trained: int | None, parallel: int) -> int:
    """The tokens each sequence gets: ``requested`` within [4, trained] (Ollama's clamps)."""
    if requested < 1:
        raise _refuse("num_ctx", "at least 1", requested)
    num_ctx = requested
    if trained and num_ctx > trained:
        log.debug("num_ctx %d is more than the model's trained context %d: using %d", num_ctx, trained, trained)
        num_ctx = trained
    num_ctx = max(MIN_NUM_CTX, num_ctx)
    if num_ctx * parallel > INT32_MAX:
        raise _refuse("num_ctx", f"at most {INT32_MAX // parallel} with {parallel} parallel sequences", requested)
    return num_ctx


def load_options(record: _Record, opts: Mapping[str, Any], embedding: bool, *,
                 parallel: int | None = None, offload: bool | None = None) -> LoadOptions:
    """The checked load options of ``record`` for a request's merged ``opts`` (raises InvalidRequest,
    naming the option and its allowed range, for a value llama.cpp must not see).

    ``parallel`` (default ``OLLAMA_NUM_PARALLEL``) and ``offload`` (default: whether this build can
    put layers on a GPU) are parameters so tests can size loads without the environment."""
    if parallel is None:
        parallel = envconfig.num_parallel()
    parallel = 1 if embedding else max(1, parallel)
    info = record.gguf_info()
    num_ctx = context_size(_int(opts, "num_ctx", 4096), info.context_length, parallel)
    num_batch = _int(opts, "num_batch", 512)
    if num_batch < 1:
        raise _refuse("num_batch", "at least 1", num_batch)
    num_batch = num_ctx if embedding else min(num_batch, num_ctx)
    num_thread = _int(opts, "num_thread", 0)
    if num_thread > MAX_THREADS:
        raise _refuse("num_thread", f"at most {MAX_THREADS} (0: one per physical core)", num_thread)
    num_gpu = _int(opts, "num_gpu", -1)
    if num_gpu > INT32_MAX:
        raise _refuse("num_gpu", f"at most {INT32_MAX} (-1: every layer that fits)", num_gpu)
    if offload is False:  # a caller that knows no device can take layers (else the planner decides)
        num_gpu = 0
    projectors = [] if embedding else record.projector_paths
    return LoadOptions(
        num_ctx=num_ctx, num_batch=num_batch, num_gpu=-1 if num_gpu < 0 else num_gpu,
        num_thread=max(0, num_thread), use_mmap=bool(opts.get("use_mmap", True)), embedding=embedding,
        num_parallel=parallel, projector=str(projectors[0]) if projectors else "",
        flash_attn=envconfig.flash_attention(),
        kv_cache_type="f16" if embedding else envconfig.kv_cache_type(),  # embeddings: see EmbeddingContext
        adapters=tuple(str(p) for p in record.adapter_paths),
    )


def explicit_num_gpu(opts: Mapping[str, Any]) -> bool:
    """Whether the user chose the offloaded layers (a ``num_gpu`` of 0 or more, from the request, the
    Modelfile or ``%%chat --options``): the planner obeys it. Ollama's ``-1`` leaves it to the fit."""
    value = opts.get("num_gpu")
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def kv_cache_bytes(info: _Info, cells: int) -> int:
    """The f16 KV cache of ``cells`` tokens (every slot's ``num_ctx`` together), summed over the layers,
    unpadded (``geometry.Geometry.kv_cache_bytes`` has llama.cpp's rule: per layer, per cache type,
    padded to 256 cells, sliding windows)."""
    return cells * sum(geometry(info).kv_per_cell())


def plan_load(record: _Record, opts: Mapping[str, Any], embedding: bool, *,
              rooms: Sequence[DeviceRoom] | None = None, parallel: int | None = None,
              offload: bool | None = None, load: LoadOptions | None = None) -> LoadPlan:
    """Check the load options and place the load over ``rooms`` (default: the whole RAM budget,
    no device): see ``planner.py`` for the rule."""
    if load is None:
        load = load_options(record, opts, embedding, parallel=parallel, offload=offload)
    if rooms is None:  # the whole RAM budget, no device
        rooms = [DeviceRoom("CPU", "CPU", int(psutil.virtual_memory().total * 0.9))]
    info = record.gguf_info()
    geom = with_adapters(geometry(info), [gguf_header(Path(p)) for p in load.adapters])
    try:
        return planner.plan(
            geom, load, rooms, planner.probe_for(record.model_path, tuple(r.name for r in rooms[1:])),
            explicit_gpu=explicit_num_gpu(opts),
            projector=Path(load.projector).stat().st_size if load.projector else 0,
        )
    except ValueError as exc:  # llama.cpp refused the load's parameters in the dry run
        raise EngineError(f"failed to load model {getattr(record, 'name', record.model_path.name)}: {exc}") from None


def describe(record: Any, runner: Any) -> dict[str, Any]:
    """The fields ``ps`` shows for a loaded model (the scheduler's ``Loaded`` entry): its bytes as
    llama.cpp reported allocating them (and the projector's file), ``size_vram`` the part off the CPU,
    and the layers it has on devices (the fitted ``num_gpu``)."""
    info = record.gguf_info()
    layers = total_layers(int(info.arch_value("block_count") or 0))
    allocated = runner.allocated
    projector = runner.load_options.projector
    details = record.details.model_copy(update={"parent_model": ""})
    return dict(
        name=record.name.short, digest=record.manifest_digest,
        size=allocated.total + (Path(projector).stat().st_size if projector else 0), size_vram=allocated.off_cpu,
        details=details.model_dump(),
        context_length=runner.n_ctx,  # the context each request gets (the decoder caps every slot at it)
        gpu_layers=max(0, min(runner.load_options.num_gpu, layers)), layers=layers,
    )


__all__ = ["LoadPlan", "context_size", "describe", "explicit_num_gpu", "kv_cache_bytes", "load_options",
           "plan_load"]
