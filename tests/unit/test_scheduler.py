"""The scheduler's rules with fake runners that load nothing (as Ollama's sched_test.go replaces
newServerFn): loads, refcounts, keep_alive, eviction, reuse while expiring. Each test takes milliseconds."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ollama_magic.engine.jobs import LoadOptions
from ollama_magic.engine.scheduler import Scheduler

GIB = 1 << 30


class FakeRunner:
    """What the scheduler uses of a Runner; ``closed`` says whether it was freed."""

    def __init__(self, model_path: Path, load: LoadOptions, name: str = "") -> None:
        self.model_path, self.load_options, self.name = model_path, load, name
        self.load_duration = 1_000
        self.n_ctx = load.num_ctx
        self.waiting = 0
        self.tokens_decoded = 0
        self.decoder = None
        self.closed = False

    def close(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True


class Factory:
    """A runner factory that records every runner it built; ``before_load`` runs first (to block or fail)."""

    def __init__(self) -> None:
        self.built: list[FakeRunner] = []
        self.before_load: Callable[[], None] = lambda: None

    def __call__(self, model_path: Path, load: LoadOptions, name: str = "") -> FakeRunner:
        self.before_load()
        runner = FakeRunner(model_path, load, name)
        self.built.append(runner)
        return runner


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def make_scheduler(factory: Factory) -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def make(**kwargs: Any) -> Scheduler:
        kwargs.setdefault("budget", 100 * GIB)
        kwargs.setdefault("max_loaded", 3)
        scheduler = Scheduler(runner_factory=factory, **kwargs)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.shutdown()


def load(num_ctx: int = 2048, embedding: bool = False) -> LoadOptions:
    return LoadOptions(num_ctx=num_ctx, num_batch=512, num_gpu=0, num_thread=0, use_mmap=True, embedding=embedding,
                       num_parallel=1 if embedding else 4)


def acquire(scheduler: Scheduler, name: str, *, size: int = GIB, options: LoadOptions | None = None,
            describe: Callable[[Any], dict[str, Any]] | None = None) -> Any:
    """Acquire model ``name`` (a fake path; ``size`` bytes); returns the entry."""
    def entry_fields(runner: Any) -> dict[str, Any]:
        return dict(name=name, digest="sha256:" + name, size=size, size_vram=0, details={},
                    context_length=runner.n_ctx)

    entry, _ = scheduler.acquire((name, False), options or load(), Path(f"/models/{name}.gguf"),
                                 describe or entry_fields, size=size)
    return entry


def names(scheduler: Scheduler) -> list[str]:
    return sorted(e.name for e in scheduler.loaded())


def test_eviction_makes_room_for_the_kv_cache_of_every_slot_not_only_the_weights(
        make_scheduler: Callable[..., Scheduler]) -> None:
    weights, kv = 2 * GIB, 1 * GIB  # two models' weights fit the budget, weights + KV do not
    scheduler = make_scheduler(budget=2 * weights + kv)
    first = acquire(scheduler, "a", size=weights + kv)
    scheduler.release(first, 300)
    acquire(scheduler, "b", size=weights + kv)
    assert names(scheduler) == ["b"]
    assert first.runner.closed


def test_a_request_while_its_model_expires_reuses_the_runner_instead_of_loading_a_second(
        make_scheduler: Callable[..., Scheduler], factory: Factory) -> None:
    scheduler = make_scheduler()
    busy = acquire(scheduler, "a")
    assert scheduler.unload("a") and names(scheduler) == []  # expiring: out of service, still in use
    again = acquire(scheduler, "a")
    assert again is busy and len(factory.built) == 1 and names(scheduler) == ["a"]
    scheduler.release(busy, 300)
    scheduler.release(again, 300)
    assert not busy.runner.closed  # the new request called the unload off


def test_new_load_options_replace_the_runner_and_both_count_until_the_old_one_is_freed(
        make_scheduler: Callable[..., Scheduler], factory: Factory) -> None:
    scheduler = make_scheduler(budget=5 * GIB)
    idle = acquire(scheduler, "other", size=2 * GIB)
    scheduler.release(idle, 300)
    old = acquire(scheduler, "a", size=2 * GIB, options=load(num_ctx=2048))
    new = acquire(scheduler, "a", size=2 * GIB, options=load(num_ctx=4096))
    assert new is not old and len(factory.built) == 3
    assert idle.runner.closed  # 2 + 2 + 2 GiB would not fit 5: the old "a" still counts while in use
    assert not old.runner.closed and names(scheduler) == ["a"]
    scheduler.release(old, 300)
    assert old.runner.closed  # its last request ended: freed
