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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

from .. import envconfig
from ..errors import InvalidRequest
from .gpu import gpu_offload_supported, offloaded_layers, total_layers
from .jobs import LoadOptions

log = logging.getLogger("ollama_magic")

MIN_NUM_CTX = 4  # Ollama's floor
INT32_MAX = 2**31 - 1  # llama_context_params.n_ctx / llama_model_params.n_gpu_layers are 32-bit
MAX_THREADS = 512  # ggml's GGML_MAX_N_THREADS
KV_BYTES_PER_VALUE = 2  # f16 K and V, llama.cpp's default cache type


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
    if offload is None:
        offload = gpu_offload_supported()
    if not offload:
        num_gpu = 0
    projectors = [] if embedding else record.projector_paths
    return LoadOptions(
        num_ctx=num_ctx, num_batch=num_batch, num_gpu=-1 if num_gpu < 0 else num_gpu,
        num_thread=max(0, num_thread), use_mmap=bool(opts.get("use_mmap", True)), embedding=embedding,
        num_parallel=parallel, projector=str(projectors[0]) if projectors else "",
        flash_attn=envconfig.flash_attention(),
        kv_cache_type="f16" if embedding else envconfig.kv_cache_type(),  # embeddings: see EmbeddingContext
    )


def _per_layer(value: Any, layers: int) -> list[int | None]:
    """A GGUF value that is one number for every layer, or an array with one per layer (None: absent)."""
    if isinstance(value, list):
        values: list[int | None] = [int(v) for v in value[:layers]]
        return values + [values[-1] if values else None] * (layers - len(values))
    return [int(value) if value is not None else None] * layers


def kv_cache_bytes(info: _Info, cells: int) -> int:
    """The KV cache of ``cells`` tokens (every slot's ``num_ctx`` together), f16, summed per layer
    from the GGUF's dimensions: ``cells x sum over layers of kv_heads x (key + value width) x 2``.

    ``head_count_kv`` defaults to ``head_count`` (no grouped-query attention); a per-layer 0 is a
    layer without attention (hybrid recurrent models), which has no KV cache. Sliding-window layers
    count in full: llama.cpp allocates their cache at full size unless ``swa_full`` is turned off, and
    we leave it at its default (on)."""
    layers = int(info.arch_value("block_count") or 0)
    width = int(info.arch_value("embedding_length") or 0)
    key_length = info.arch_value("attention.key_length")
    value_length = info.arch_value("attention.value_length")
    per_token = 0
    for heads, kv_heads in zip(_per_layer(info.arch_value("attention.head_count"), layers),
                               _per_layer(info.arch_value("attention.head_count_kv"), layers)):
        heads = heads or 1
        k = int(key_length or width // heads)
        v = int(value_length or k)
        per_token += (heads if kv_heads is None else kv_heads) * (k + v)
    return cells * per_token * KV_BYTES_PER_VALUE


@dataclass(frozen=True)
class LoadPlan:
    """One load, sized before it happens: what the scheduler makes room for."""

    options: LoadOptions
    weights: int
    kv_cache: int
    projector: int

    @property
    def size(self) -> int:
        """Bytes the load takes: weights, the KV cache of every slot, and the projector."""
        return self.weights + self.kv_cache + self.projector


def plan_load(record: _Record, opts: Mapping[str, Any], embedding: bool, *,
              parallel: int | None = None, offload: bool | None = None) -> LoadPlan:
    """Check the load options and size the load (see :func:`load_options` for the parameters)."""
    load = load_options(record, opts, embedding, parallel=parallel, offload=offload)
    info = record.gguf_info()
    return LoadPlan(
        options=load,
        weights=record.model_path.stat().st_size,
        kv_cache=kv_cache_bytes(info, load.num_ctx * load.num_parallel),  # each slot holds num_ctx tokens
        projector=Path(load.projector).stat().st_size if load.projector else 0,
    )


def describe(record: Any, plan: LoadPlan, runner: Any) -> dict[str, Any]:
    """The fields ``ps`` shows for a model loaded by ``plan`` (the scheduler's ``Loaded`` entry)."""
    info = record.gguf_info()
    blocks = int(info.arch_value("block_count") or 0)
    layers = total_layers(blocks)
    on_gpu = offloaded_layers(plan.options.num_gpu, blocks, gpu_offload_supported())
    details = record.details.model_copy(update={"parent_model": ""})
    return dict(
        name=record.name.short, digest=record.manifest_digest, size=plan.size,
        size_vram=plan.size * on_gpu // layers, details=details.model_dump(),
        context_length=runner.n_ctx,  # the context each request gets (the decoder caps every slot at it)
        gpu_layers=on_gpu, layers=layers,
    )


__all__ = ["LoadPlan", "context_size", "describe", "kv_cache_bytes", "load_options", "plan_load"]
