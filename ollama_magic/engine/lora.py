"""LoRA adapters on a loaded model: loaded with it, counted in its memory, scaled per request.

A model created with ``ADAPTER`` lines loads each adapter after its weights
(``llama_adapter_lora_init``, as llama-server's ``--lora``) and frees them before the model. Every
request runs under a *scale vector*, one float per adapter in ADAPTER order: ``lora_scale`` for all of
them (default 1.0), or llama-server's per-request ``lora`` list (``[{"id": i, "scale": s}]``, adapters
not listed at 0). llama.cpp holds one adapter set per context, so the decoder never puts sequences of
different vectors into one ``llama_decode``, and never lets one vector's KV cells serve another
(``decoder.py``); :meth:`LoraAdapters.apply` is called only when the vector changes, since llama.cpp
reserves its compute graph again after each change.
"""

from __future__ import annotations

import ctypes
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import llama_cpp

from ..errors import InvalidRequest
from ..store.adapters import adapter_bytes
from .geometry import Geometry, tensor_group


def lora_scales(opts: Mapping[str, Any], n_adapters: int, model: str = "") -> tuple[float, ...]:
    """The scale vector a request's merged options ask for (checked shapes: ``options.check_lora``).

    As llama-server's ``construct_lora_list``: a non-empty ``lora`` list sets the adapters it names and
    leaves the others at 0; without one every adapter takes ``lora_scale``. An id the model does not
    have is refused (llama-server ignores it: a typo would silently run the base model)."""
    entries = opts.get("lora") or []
    unknown = [e["id"] for e in entries if e["id"] >= n_adapters]
    if unknown:
        held = f"adapters 0 to {n_adapters - 1}" if n_adapters > 1 else "adapter 0" if n_adapters else "no adapters"
        raise InvalidRequest(f'option "lora": adapter {unknown[0]} does not exist: {model or "the model"} has {held}')
    if entries:
        chosen = {e["id"]: float(e["scale"]) for e in entries}
        return tuple(chosen.get(i, 0.0) for i in range(n_adapters))
    return (float(opts.get("lora_scale", 1.0)),) * n_adapters


def with_adapters(geom: Geometry, adapters: Sequence[Any]) -> Geometry:
    """``geom`` with the adapters' tensors counted where llama.cpp puts them: each LoRA pair in the
    buffer type of the weight it patches (``llama_adapter_lora_init_impl``), so on that layer's
    device; a patched input tensor (``token_embd``) with the inputs, on the CPU. llama.cpp moves a
    pair off a repacking buffer onto the plain CPU one: the same device. Not counted: the few graph
    nodes the adapters add to the compute buffer (6 per pair) and, with mmap, the CPU's mapped span
    is the base file's alone, so an adapter on CPU layers of a partly offloaded model may hide in it."""
    layers = list(geom.layer_weights)
    inputs, outputs = geom.input_weights, geom.output_weights
    for info in adapters:
        for weight, size in adapter_bytes(info).items():
            group = tensor_group(weight, geom.block_count)
            if group < geom.block_count:
                layers[group] += size
            elif group == geom.block_count:
                outputs += size
            else:
                inputs += size
    return replace(geom, layer_weights=tuple(layers), input_weights=inputs, output_weights=outputs)


class LoraAdapters:
    """The adapters of one loaded model (owner thread only, like the model)."""

    def __init__(self, model: llama_cpp.llama_model_p, paths: Sequence[Path]) -> None:
        self.handles: list[Any] = []
        for path in paths:
            handle = llama_cpp.llama_adapter_lora_init(model, str(path).encode())
            if not handle:
                self.free()
                raise ValueError(f"llama.cpp could not load the LoRA adapter {Path(path).name} (its log says why)")
            self.handles.append(handle)
        self._array = (llama_cpp.llama_adapter_lora_p_ctypes * len(self.handles))(*self.handles)

    def __len__(self) -> int:
        return len(self.handles)

    def apply(self, ctx: llama_cpp.llama_context_p, scales: Sequence[float]) -> None:
        """Set every adapter's scale on ``ctx`` (0 leaves it out of the graph, as llama.cpp does)."""
        if len(scales) != len(self.handles):
            raise ValueError(f"{len(scales)} LoRA scales for {len(self.handles)} adapters")
        if not self.handles:
            return
        values = (ctypes.c_float * len(scales))(*scales)
        llama_cpp.llama_set_adapters_lora(ctx, self._array, len(self.handles), values)

    def free(self) -> None:
        """Free the adapters: before the model (its destructor frees those still registered with it,
        so freeing them after it would free them twice), after every context using them."""
        for handle in self.handles:
            llama_cpp.llama_adapter_lora_free(handle)
        self.handles = []
        self._array = None


__all__ = ["LoraAdapters", "lora_scales", "with_adapters"]
