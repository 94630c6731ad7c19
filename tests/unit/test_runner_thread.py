"""The runner's thread plumbing without a model (review §6 B10, §7 P7): a call can never wait forever
on an owner thread that has stopped, and a waiting caller wakes up often enough for Ctrl-C."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest

from ollama_magic.engine import runner as runner_module
from ollama_magic.engine.jobs import EngineError
from ollama_magic.engine.runner import LoadOptions, Runner

LOAD = LoadOptions(num_ctx=64, num_batch=8, num_gpu=0, num_thread=1, use_mmap=True)


class NoModel(Runner):
    """A runner whose load loads nothing: only its thread and inbox are real."""

    def _load(self) -> None:
        pass


def in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def test_a_call_after_the_owner_thread_ended_fails_instead_of_hanging() -> None:
    runner = NoModel("nowhere.gguf", LOAD, name="fake")  # type: ignore[arg-type]
    runner._inbox.put(runner_module._STOP)  # the thread ends as a close() racing this call would end it
    runner._thread.join(timeout=5)
    thread, box = in_thread(lambda: runner.call(lambda: 1))
    thread.join(timeout=3)
    assert not thread.is_alive(), "call() waited forever on a thread that has ended"
    assert isinstance(box.get("error"), EngineError)


def test_calls_queued_behind_the_stop_end_with_an_error() -> None:
    runner = NoModel("nowhere.gguf", LOAD, name="fake")  # type: ignore[arg-type]
    gate = threading.Event()
    busy, _ = in_thread(lambda: runner.call(gate.wait))  # the owner thread is busy in this call
    time.sleep(0.1)
    runner._inbox.put(runner_module._STOP)
    late, box = in_thread(lambda: runner.call(lambda: 2))  # queued after the stop
    time.sleep(0.1)
    gate.set()
    late.join(timeout=3)
    busy.join(timeout=3)
    assert not late.is_alive() and isinstance(box.get("error"), EngineError)
    assert runner.waiting == 0


def test_a_waiting_call_wakes_up_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lock waits without a timeout are not interruptible by Ctrl-C on Windows: waits come in slices."""
    runner = NoModel("nowhere.gguf", LOAD, name="fake")  # type: ignore[arg-type]
    timeouts: list[float | None] = []
    real = runner_module.Future.result

    def recording(self: Any, timeout: float | None = None) -> Any:
        timeouts.append(timeout)
        return real(self, timeout)

    monkeypatch.setattr(runner_module.Future, "result", recording)
    assert runner.call(lambda: time.sleep(0.5) or 3) == 3
    assert timeouts and None not in timeouts and len(timeouts) >= 2
    runner.close()


def test_a_generation_taken_with_the_stop_ends_with_an_error_and_leaves_the_queue() -> None:
    """The owner thread takes everything queued at once: a job behind the stop in that same take will
    never run, so its consumer gets the error at once and the waiting count goes back to 0."""
    runner = NoModel("nowhere.gguf", LOAD, name="fake")  # type: ignore[arg-type]
    gate = threading.Event()
    busy, _ = in_thread(lambda: runner.call(gate.wait))  # the owner thread is busy in this call
    time.sleep(0.1)
    output: queue.Queue[Any] = queue.Queue()
    runner._enter_queue()
    runner._inbox.put(runner_module._STOP)
    runner._inbox.put((object(), output))  # a generation queued after the stop, taken with it
    gate.set()
    busy.join(timeout=3)
    runner._thread.join(timeout=3)
    assert isinstance(output.get(timeout=3), EngineError)
    assert runner.waiting == 0
