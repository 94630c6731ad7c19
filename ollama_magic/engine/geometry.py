"""A model's memory, layer by layer, read from its GGUF tensor table: what the planner places on devices.

llama.cpp offloads whole layers: the repeating blocks (``blk.N.*``) and then the output layer, counted
as layer ``n_layer`` (``n_gpu_layers = k`` puts the last k of those ``n_layer + 1`` layers on the
devices). The input embeddings always stay on the CPU. A model with tied embeddings (no
``output.weight``) reads the output projection from ``token_embd``: llama.cpp duplicates that tensor
onto the output layer's device, so when the output layer is offloaded it costs ``token_embd``'s bytes
there. Weights come from the tensor table exactly (the bytes llama.cpp reads); the KV cache follows
llama.cpp's ``llama_kv_cache`` sizing (cells padded to 256, one K and one V row per cell per layer,
sliding-window layers sized to their window unless the cache is full-size).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import gguf

from ..store.gguf_meta import tensor_nbytes

KV_PAD = 256  # llama.cpp pads n_ctx, and the SWA cache, to 256 cells
#: the K/V cache types Ollama accepts (OLLAMA_KV_CACHE_TYPE), by ggml's names and type ids: the one
#: table the planner sizes with and ``llama_context`` hands to llama.cpp
KV_TYPES = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
            "q4_0": gguf.GGMLQuantizationType.Q4_0}
#: llama.cpp's hard-coded sliding-window patterns (``hparams.set_swa_pattern(n)`` in llama-model.cpp:
#: layer il is a window layer when il % n < n - 1) for architectures whose GGUF carries no per-layer array
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gemma3n": 5, "exaone4": 4}

_BLOCK = re.compile(r"^blk\.(\d+)\.")
_INPUT = ("token_embd", "token_types", "position_embd", "per_layer_token_embd")
#: tensors without a block number that llama.cpp creates as layer 0's (LLM_TENSOR_LAYER_REPEATING)
_LAYER_0 = ("rope_freqs",)


def tensor_group(name: str, blocks: int) -> int:
    """Which layer llama.cpp puts tensor ``name`` of a model with ``blocks`` blocks in: its block
    (0 to blocks - 1), ``blocks`` for the output layer, ``blocks + 1`` for the inputs kept on the CPU.
    The planner sizes layers by it and ``lora.with_adapters`` counts each adapter pair in its weight's."""
    match = _BLOCK.match(name)
    if match and int(match.group(1)) < blocks:
        return int(match.group(1))
    if name.startswith(_LAYER_0) and blocks:
        return 0
    if name.startswith(_INPUT):
        return blocks + 1
    return blocks


class _Info(Protocol):
    @property
    def architecture(self) -> str: ...

    @property
    def tensors(self) -> list[Any]: ...

    def arch_value(self, key: str) -> Any: ...


def _per_layer(value: Any, layers: int) -> list[int | None]:
    """A GGUF value that is one number for every layer, or an array with one per layer (None: absent)."""
    if isinstance(value, list):
        values: list[int | None] = [int(v) for v in value[:layers]]
        return values + [values[-1] if values else None] * (layers - len(values))
    return [int(value) if value is not None else None] * layers


def _pad(value: int, to: int = KV_PAD) -> int:
    return -(-value // to) * to


@dataclass(frozen=True)
class Geometry:
    """Bytes per layer of one model (see the module docstring for what counts where)."""

    architecture: str
    block_count: int
    #: bytes of each block's tensors (``blk.N.*``), in block order
    layer_weights: tuple[int, ...]
    #: token embeddings and the other input tensors llama.cpp keeps on the CPU
    input_weights: int
    #: the output layer (``output.weight``, ``output_norm``...): offloaded as layer ``block_count``
    output_weights: int
    #: tied embeddings: the ``token_embd`` copy the output layer takes when it is offloaded (on the CPU
    #: it shares the input's tensor)
    tied_output: int
    #: per layer: K and V values per cell (kv heads x head width); 0 for a layer without attention
    kv_widths: tuple[tuple[int, int], ...]
    #: per layer: whether it attends through a sliding window, and the window
    swa_layers: tuple[bool, ...]
    swa_window: int
    #: where each group's tensors lie in the file, (first byte, last byte + 1): the blocks in order, then
    #: the output layer, then the input. With mmap llama.cpp maps, for the CPU, the file range from the
    #: first to the last byte of the tensors it keeps there (``get_mapping_range``), so what it reports
    #: for the CPU is that span, offloaded layers between them included
    spans: tuple[tuple[int, int], ...] = ()

    def mapped_span(self, groups: range | list[int]) -> int:
        """Bytes of the file range covering ``groups`` (indexes into :attr:`spans`)."""
        chosen = [self.spans[g] for g in groups if g < len(self.spans) and self.spans[g][1] > self.spans[g][0]]
        return max(end for _, end in chosen) - min(start for start, _ in chosen) if chosen else 0

    @property
    def layers(self) -> int:
        """The layers llama.cpp counts for offloading: every block plus the output layer."""
        return self.block_count + 1

    @property
    def weights(self) -> int:
        return self.input_weights + sum(self.layer_weights) + self.output_weights

    def kv_cache_bytes(self, cells: int, n_seq: int = 1, type_k: str = "f16", type_v: str = "f16",
                       swa_full: bool = True, n_ubatch: int = 512) -> tuple[int, ...]:
        """The KV cache per layer of a context of ``cells`` cells (every slot's ``num_ctx`` together)
        holding ``n_seq`` sequences in llama.cpp's unified cache."""
        base = _pad(cells)
        window = min(base, _pad(self.swa_window * n_seq + n_ubatch)) if self.swa_window and not swa_full else base
        return tuple((window if swa else base) * per_cell
                     for per_cell, swa in zip(self.kv_per_cell(type_k, type_v), self.swa_layers))

    def kv_per_cell(self, type_k: str = "f16", type_v: str = "f16") -> tuple[int, ...]:
        """Bytes of one cell's K and V, per layer."""
        k_type, v_type = KV_TYPES[type_k], KV_TYPES[type_v]
        return tuple(tensor_nbytes(k_type, k) + tensor_nbytes(v_type, v) for k, v in self.kv_widths)


def _swa_layers(info: _Info, layers: int) -> tuple[tuple[bool, ...], int]:
    window = int(info.arch_value("attention.sliding_window") or 0)
    if not window:
        return (False,) * layers, 0
    pattern = info.arch_value("attention.sliding_window_pattern")
    if isinstance(pattern, list):
        flags = [bool(v) for v in pattern[:layers]]
        return tuple(flags + [False] * (layers - len(flags))), window
    every = int(pattern) if isinstance(pattern, int) and pattern > 0 else SWA_PATTERNS.get(info.architecture, 0)
    if not every:  # a window on every layer (e.g. mistral's sliding_window)
        return (True,) * layers, window
    return tuple(il % every < every - 1 for il in range(layers)), window


def geometry(info: _Info) -> Geometry:
    """A model's :class:`Geometry` from its GGUF header (``store.gguf_meta.read_gguf``)."""
    blocks = int(info.arch_value("block_count") or 0)
    layer_weights = [0] * blocks
    input_weights = output_weights = 0
    names = set()
    spans: list[list[int]] = [[1 << 62, 0] for _ in range(blocks + 2)]  # blocks, output, input
    for tensor in info.tensors:
        names.add(tensor.name)
        group = tensor_group(tensor.name, blocks)
        if group < blocks:
            layer_weights[group] += tensor.nbytes
        elif group == blocks:
            output_weights += tensor.nbytes
        else:
            input_weights += tensor.nbytes
        offset = getattr(tensor, "offset", 0)
        spans[group] = [min(spans[group][0], offset), max(spans[group][1], offset + tensor.nbytes)]
    tied = 0
    if "output.weight" not in names:  # tied embeddings: llama.cpp duplicates token_embd as the output
        tied = next((t.nbytes for t in info.tensors if t.name == "token_embd.weight"), 0)
    width = int(info.arch_value("embedding_length") or 0)
    key_length = info.arch_value("attention.key_length")
    value_length = info.arch_value("attention.value_length")
    widths = []
    for heads, kv_heads in zip(_per_layer(info.arch_value("attention.head_count"), blocks),
                               _per_layer(info.arch_value("attention.head_count_kv"), blocks)):
        n_head = heads or 1
        k = int(key_length or width // n_head)
        v = int(value_length or k)
        n_kv = n_head if kv_heads is None else kv_heads
        widths.append((n_kv * k, n_kv * v))
    if info.arch_value("attention.causal") is False:  # an encoder (BERT): no KV cache, no output projection
        widths = [(0, 0)] * blocks
        tied = 0
    swa, window = _swa_layers(info, blocks)
    return Geometry(
        architecture=info.architecture, block_count=blocks, layer_weights=tuple(layer_weights),
        input_weights=input_weights, output_weights=output_weights, tied_output=tied, kv_widths=tuple(widths),
        swa_layers=swa, swa_window=window, spans=tuple((a, b) if b else (0, 0) for a, b in spans),
    )


__all__ = ["KV_TYPES", "Geometry", "geometry", "tensor_group"]
