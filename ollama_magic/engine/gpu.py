"""Whether this llama.cpp build can put layers on a GPU, and how many layers a loaded model has there.

pip builds llama-cpp-python from source: a plain build runs on the CPU only, one built with
``CMAKE_ARGS="-DGGML_CUDA=on"`` (or ``-DGGML_METAL=on`` on macOS) can offload, and so can one with RPC
workers added (``devices.py``): offloading is possible when llama.cpp's offload list has a device.
llama.cpp then offloads ``min(n_gpu_layers, n_layer + 1)`` layers (the repeating blocks plus the output
layer; ``-1`` means all), so what a model has on the GPU follows from its block count and the
``num_gpu`` it was loaded with: the count llama.cpp logs as ``offloaded N/M layers to GPU``.
"""

from __future__ import annotations


def gpu_offload_supported() -> bool:
    """Whether llama.cpp has a device to offload layers to now: a GPU, or another machine's through RPC.

    Not ``llama_supports_gpu_offload()``: that is true in every build with the RPC backend (the
    Makefile's ``GGML_RPC=ON``), workers or not. Asked each time, as ``%ollama rpc add`` adds devices."""
    from .devices import offload_devices

    return bool(offload_devices())


def total_layers(block_count: int) -> int:
    """The layers llama.cpp counts for offloading: every block plus the output layer."""
    return block_count + 1


def offloaded_layers(num_gpu: int, block_count: int, offload: bool) -> int:
    """How many of a model's layers llama.cpp puts on the GPU when loaded with ``n_gpu_layers=num_gpu``."""
    if not offload or num_gpu == 0:
        return 0
    total = total_layers(block_count)
    return total if num_gpu < 0 else min(num_gpu, total)


__all__ = ["gpu_offload_supported", "offloaded_layers", "total_layers"]
