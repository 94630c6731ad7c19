"""What llama.cpp allocated (or, with ``no_alloc``, would allocate) on each device, from its own report.

llama.cpp measures its buffers itself and says so at every load: the weights per buffer type
(``load_tensors: CUDA0 model buffer size = ...``), the KV cache, the logits (output) buffer and the
compute buffers the scheduler reserves for the worst-case graph. ``common/fit.cpp`` reads the same
numbers through ``llama_get_memory_breakdown``, a C++ call returning a ``std::map`` that ctypes cannot
take; the log carries them line for line (to 0.01 MiB), so the engine reads them there, on the loading
thread only (``llama_log.captured_lines``).

Two uses: :func:`measured` around a real load (what ``ps`` reports: ``size_vram`` is what landed on
devices other than the CPU) and :func:`probe`, a ``no_alloc`` load (weights and KV read 0 there, but the
compute and output buffers, which no formula predicts well, are real) that the planner asks before it
places a model.
"""

from __future__ import annotations

import ctypes
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import llama_cpp

from .llama_log import captured_lines, llama_log

MIB = 1024 * 1024
#: a LoRA adapter's buffers (``llama_adapter_lora_init_impl: CPU LoRA buffer size = ...``) count as weights
_BUFFER = re.compile(r"^\w+:\s+(\S+)\s+(model|KV|output|compute|LoRA) buffer size =\s+([\d.]+) MiB")
_KV_TOTAL = re.compile(r"^llama_kv_cache: size =\s+([\d.]+) MiB")
_HOST = ("CPU", "CPU_Mapped", "CPU_REPACK", "CPU_AARCH64", "AMX")
_KINDS = {"model": "model", "KV": "kv", "output": "output", "compute": "compute", "LoRA": "model"}


def device_of(buffer: str) -> str:
    """The device a llama.cpp buffer type lives on: host buffers (the CPU's own, mapped files,
    repacked weights, a GPU backend's pinned ``*_Host`` memory) count as the CPU's."""
    if buffer in _HOST or buffer.startswith("CPU") or buffer.endswith("_Host"):
        return "CPU"
    for suffix in ("_Mapped", "_Split"):
        if buffer.endswith(suffix):
            return buffer[: -len(suffix)]
    return buffer


class LlamaRefused(ValueError):
    """llama.cpp refused a dry run's parameters (its log says why, at debug level)."""


@dataclass
class Buffers:
    """Bytes of one device's buffers, by what they hold."""

    model: int = 0
    kv: int = 0
    output: int = 0
    compute: int = 0

    @property
    def total(self) -> int:
        return self.model + self.kv + self.output + self.compute


@dataclass
class BufferReport:
    """llama.cpp's buffer lines of one load, per device (see :func:`device_of`)."""

    devices: dict[str, Buffers] = field(default_factory=dict)
    #: the KV cache's total as llama.cpp sizes it (reported by no_alloc loads too)
    kv_total: int = 0

    def add_lines(self, lines: list[str]) -> "BufferReport":
        for line in lines:
            match = _BUFFER.match(line)
            if match:
                buffers = self.devices.setdefault(device_of(match.group(1)), Buffers())
                kind = _KINDS[match.group(2)]
                setattr(buffers, kind, getattr(buffers, kind) + round(float(match.group(3)) * MIB))
                continue
            match = _KV_TOTAL.match(line)
            if match:
                self.kv_total += round(float(match.group(1)) * MIB)
        return self

    @property
    def total(self) -> int:
        return sum(b.total for b in self.devices.values())

    @property
    def off_cpu(self) -> int:
        """Bytes on devices other than the CPU: Ollama's ``size_vram``."""
        return sum(b.total for name, b in self.devices.items() if name != "CPU")


@contextmanager
def measured() -> Iterator[BufferReport]:
    """The buffers of the loads run on this thread inside the block, filled in when it ends."""
    report = BufferReport()
    with captured_lines() as lines:
        try:
            yield report
        finally:
            report.add_lines(lines)


def probe(path: Path, mparams: llama_cpp.llama_model_params,
          cparams: llama_cpp.llama_context_params) -> BufferReport:
    """llama.cpp's report for a load with these parameters, allocating nothing (``no_alloc``: the
    weights are not read, the KV cache and compute buffers not allocated). Raises ValueError when
    llama.cpp refuses the parameters."""
    llama_cpp.llama_backend_init()
    copied = type(mparams)()
    ctypes.pointer(copied)[0] = mparams  # a copy: the caller's parameters must still load for real
    copied._source = mparams  # type: ignore[attr-defined] # it keeps alive the arrays its pointers name
    mparams = copied
    mparams.no_alloc = True
    mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE  # llama.cpp asserts no mmap with no_alloc
    with captured_lines(forward=False) as lines:
        try:
            model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
            if not model:
                raise LlamaRefused(f"llama.cpp cannot load {path.name}")
            try:
                ctx = llama_cpp.llama_init_from_model(model, cparams)
                if not ctx:
                    raise LlamaRefused(f"llama.cpp cannot create a context of {cparams.n_ctx} tokens for {path.name}")
                llama_cpp.llama_free(ctx)
            finally:
                llama_cpp.llama_model_free(model)
        except ValueError:
            for line in lines:  # why llama.cpp refused: worth the log, unlike a dry run that worked
                llama_log.debug(line)
            raise
    report = BufferReport().add_lines(lines)
    return report


__all__ = ["BufferReport", "Buffers", "LlamaRefused", "device_of", "measured", "probe"]
