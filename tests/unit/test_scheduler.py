"""The scheduler's rules with fake runners that load nothing (as Ollama's sched_test.go replaces
newServerFn): loads, refcounts, keep_alive, eviction, reuse while expiring. Each test takes milliseconds."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ollama_magic.engine.jobs import LoadOptions
from ollama_magic.errors import EngineError
from ollama_magic.engine.scheduler import LoadedKey, LoadedStats, Scheduler

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


def test_a_model_loads_once_and_is_freed_only_when_its_last_request_ends_after_an_unload(
        make_scheduler: Callable[..., Scheduler], factory: Factory) -> None:
    scheduler = make_scheduler()
    first, second = acquire(scheduler, "a"), acquire(scheduler, "a")
    assert first is second and first.active == 2 and len(factory.built) == 1
    assert scheduler.unload("a")
    scheduler.release(first, 300)
    assert not first.runner.closed  # one request still uses it
    scheduler.release(second, 300)
    assert first.runner.closed and names(scheduler) == []


def test_keep_alive_zero_unloads_when_the_request_ends(make_scheduler: Callable[..., Scheduler]) -> None:
    scheduler = make_scheduler()
    entry = acquire(scheduler, "a")
    scheduler.release(entry, 0)
    assert entry.runner.closed and names(scheduler) == []


def test_the_keep_alive_reaper_unloads_an_idle_model_once_its_time_is_up(
        make_scheduler: Callable[..., Scheduler]) -> None:
    scheduler = make_scheduler()
    entry = acquire(scheduler, "a")
    scheduler.release(entry, 0.2)
    assert not entry.runner.closed and names(scheduler) == ["a"]
    deadline = time.monotonic() + 5
    while not entry.runner.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert entry.runner.closed and names(scheduler) == []


def test_the_least_recently_used_idle_model_makes_room_and_a_busy_one_never_does(
        make_scheduler: Callable[..., Scheduler]) -> None:
    scheduler = make_scheduler(max_loaded=2)
    a, b = acquire(scheduler, "a"), acquire(scheduler, "b")
    scheduler.release(b, 300)
    scheduler.release(a, 300)  # a was used last
    scheduler.release(acquire(scheduler, "c"), 300)
    assert names(scheduler) == ["a", "c"] and b.runner.closed
    busy = acquire(scheduler, "a")
    acquire(scheduler, "d")  # c is idle: it goes; a is busy: it stays
    assert names(scheduler) == ["a", "d"] and not busy.runner.closed


def test_a_failed_load_raises_its_error_and_the_next_request_loads_again(
        make_scheduler: Callable[..., Scheduler], factory: Factory) -> None:
    scheduler = make_scheduler()

    def fail() -> None:
        raise RuntimeError("no such file")

    factory.before_load = fail
    with pytest.raises(RuntimeError, match="no such file"):
        acquire(scheduler, "a")
    assert names(scheduler) == []
    factory.before_load = lambda: None
    assert acquire(scheduler, "a").runner is factory.built[-1]


def test_a_describe_that_raises_closes_the_runner_it_was_given(make_scheduler: Callable[..., Scheduler],
                                                                factory: Factory) -> None:
    def describe(runner: Any) -> dict[str, Any]:
        raise FileNotFoundError("the projector blob was pruned")

    scheduler = make_scheduler()
    with pytest.raises(FileNotFoundError):
        acquire(scheduler, "a", describe=describe)
    [runner] = factory.built
    assert runner.closed and names(scheduler) == []


def test_requests_queued_behind_a_load_share_it_while_other_models_load_meanwhile(
        make_scheduler: Callable[..., Scheduler], factory: Factory) -> None:
    scheduler = make_scheduler()
    gate, loading = threading.Event(), threading.Event()

    def slow_a() -> None:
        if not factory.built:  # the first load ("a") waits for the gate
            loading.set()
            assert gate.wait(5)

    factory.before_load = slow_a
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(acquire(scheduler, "a"))) for _ in range(3)]
    threads[0].start()
    assert loading.wait(5)
    for t in threads[1:]:
        t.start()
    factory.before_load = lambda: None
    other = acquire(scheduler, "b")  # not held up by a's load
    assert other.name == "b" and len(results) == 0
    gate.set()
    for t in threads:
        t.join(5)
    assert len(results) == 3 and all(r is results[0] for r in results) and results[0].active == 3
    assert [r.name for r in factory.built] == ["b", "a"]
    assert scheduler._key_locks == {}  # no lock kept per model once nobody waits for it


def test_acquire_after_shutdown_refuses_instead_of_loading_a_model_nobody_reaps(
        make_scheduler: Callable[..., Scheduler], factory: Factory) -> None:
    scheduler = make_scheduler()
    scheduler.shutdown()
    with pytest.raises(EngineError, match="the engine is closed"):
        acquire(scheduler, "a")
    assert factory.built == []


def test_a_load_that_ends_after_shutdown_is_freed_and_refused(make_scheduler: Callable[..., Scheduler],
                                                              factory: Factory) -> None:
    scheduler = make_scheduler()
    factory.before_load = scheduler.shutdown  # shutdown arrives while the model loads
    with pytest.raises(EngineError, match="the engine is closed"):
        acquire(scheduler, "a")
    [runner] = factory.built
    assert runner.closed and names(scheduler) == []


def test_key_locks_do_not_grow_with_every_model_name(make_scheduler: Callable[..., Scheduler]) -> None:
    scheduler = make_scheduler()
    for i in range(50):
        scheduler.release(acquire(scheduler, f"model-{i}"), 0)
    assert scheduler._key_locks == {}


def test_entries_are_keyed_by_a_named_tuple_that_still_reads_as_name_and_embedding(
        make_scheduler: Callable[..., Scheduler]) -> None:
    entry = acquire(make_scheduler(), "a")
    assert entry.key == LoadedKey("a", False) == ("a", False)
    assert (entry.key.name, entry.key.embedding, entry.key[1]) == ("a", False, False)


def test_stats_report_each_model_s_requests_including_an_expiring_one(make_scheduler: Callable[..., Scheduler]) -> None:
    scheduler = make_scheduler()
    a = acquire(scheduler, "a")
    a.runner.tokens_decoded, a.runner.waiting = 12, 2
    acquire(scheduler, "a")
    scheduler.release(acquire(scheduler, "b"), 300)
    scheduler.unload("a")
    assert scheduler.stats() == [
        LoadedStats(name="b", embedding=False, active=0, waiting=0, tokens_decoded=0, peak_active=0, expiring=False,
                    size=GIB, devices={"CPU": GIB}),
        LoadedStats(name="a", embedding=False, active=2, waiting=2, tokens_decoded=12, peak_active=0, expiring=True,
                    size=GIB, devices={"CPU": GIB}),
    ]


def test_the_memory_budget_is_most_of_the_ram_also_where_os_has_no_sysconf(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import psutil

    from ollama_magic.engine.scheduler import memory_budget

    monkeypatch.delattr(os, "sysconf", raising=False)  # as on Windows
    assert memory_budget() == int(psutil.virtual_memory().total * 0.9)
