"""Whether llama.cpp has a device to put layers on now, and how many layers a model has for it.

llama.cpp offloads to GPUs (CUDA, Metal, Vulkan, ROCm builds) and to RPC workers (other machines'
devices, ``OLLAMA_MAGIC_RPC``). ``llama_supports_gpu_offload()`` answers for the build (true for
any RPC-enabled build, with or without a worker), so what ``ps`` reports as ``gpu_offload`` is
whether a device is there now (``devices.offload_devices``). llama.cpp offloads
``min(n_gpu_layers, n_layer + 1)`` layers (the repeating blocks plus the output layer); how many a
loaded model has on devices is the planner's fitted ``num_gpu`` (``planner.py``).
"""

from __future__ import annotations


def gpu_offload_supported() -> bool:
    """Whether a device other than the CPU can take layers now (asked at every call: an RPC worker
    can be added while the process runs)."""
    from .devices import offload_devices

    return bool(offload_devices())


def total_layers(block_count: int) -> int:
    """The layers llama.cpp counts for offloading: every block plus the output layer."""
    return block_count + 1


def offloaded_layers(num_gpu: int, block_count: int, offload: bool) -> int:
    """How many of a model's layers llama.cpp puts on devices when loaded with ``n_gpu_layers=num_gpu``."""
    if not offload or num_gpu == 0:
        return 0
    total = total_layers(block_count)
    return total if num_gpu < 0 else min(num_gpu, total)


__all__ = ["gpu_offload_supported", "offloaded_layers", "total_layers"]
