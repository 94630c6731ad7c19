"""What the operating system lends the engine: the cores to decode on, and freed heap given back.

Both differ by OS, so each is asked of ``psutil`` or guarded here, once, instead of calling Linux-only
functions (``os.sched_getaffinity``, glibc's ``malloc_trim``) from the runner.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Callable

import psutil


def physical_cores() -> int:
    """Decode threads by default: physical cores, as Ollama and llama-cpp-python choose (SMT
    siblings share one core's vector units, so using them too only adds contention), and never more
    than the CPUs this process may run on (``taskset``, a container's cpuset, ``start /affinity``)."""
    cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    allowed = usable_cpus()
    if allowed:
        cores = min(cores, allowed)
    return max(1, cores)


def usable_cpus() -> int | None:
    """How many logical CPUs this process's affinity allows (Linux, Windows, FreeBSD); None where
    the OS does not say (macOS has no affinity)."""
    try:
        return len(psutil.Process().cpu_affinity())
    except (AttributeError, NotImplementedError, OSError, psutil.Error):
        return None


def return_freed_memory() -> None:
    """Give freed heap back to the OS after an unload.

    Each runner thread gets its own glibc malloc arena; without a trim, the few hundred MB a model
    used stay mapped in the process after it is freed (measured: RSS wandering +80..+190 MB over 40
    load/unload cycles, flat with the trim). Only glibc has ``malloc_trim`` (and needs it); on macOS,
    Windows and musl this does nothing.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl: no libc.so.6, no malloc_trim
        return None
