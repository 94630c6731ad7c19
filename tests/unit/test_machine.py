"""The cores the engine decodes on by default and the heap trim after an unload, on every OS: asked of
psutil (Linux, Windows) or skipped (macOS has no CPU affinity, only glibc has ``malloc_trim``)."""

from __future__ import annotations

import os

import psutil
import pytest

from ollama_magic.engine import machine
from ollama_magic.engine.runner import physical_cores


class Process:
    """psutil.Process as a test wants it: an affinity list, or none at all (macOS)."""

    def __init__(self, affinity: list[int] | None) -> None:
        if affinity is not None:
            self.cpu_affinity = lambda: affinity


def test_a_process_pinned_to_one_cpu_decodes_on_one_thread_without_sched_getaffinity(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no ``os.sched_getaffinity``, yet ``start /affinity 1`` pins a kernel to one CPU."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(psutil, "Process", lambda: Process([0]))
    assert physical_cores() == 1


def test_without_cpu_affinity_the_physical_cores_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(psutil, "Process", lambda: Process(None))  # macOS
    assert physical_cores() == (psutil.cpu_count(logical=False) or psutil.cpu_count() or 1)


def test_the_default_is_at_least_one_and_never_more_than_this_process_may_use() -> None:
    allowed = machine.usable_cpus() or psutil.cpu_count()
    assert 1 <= physical_cores() <= min(allowed, psutil.cpu_count(logical=False) or allowed)


def test_the_heap_trim_is_glibcs_and_elsewhere_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    machine._malloc_trim.cache_clear()
    monkeypatch.setattr(machine.sys, "platform", "darwin")
    try:
        assert machine._malloc_trim() is None
        machine.return_freed_memory()  # no libc.so.6 is looked for
    finally:
        machine._malloc_trim.cache_clear()
