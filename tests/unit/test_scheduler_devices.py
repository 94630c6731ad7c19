"""The scheduler budgets every device (engine/scheduler.py with engine/planner.py): fake runners that
load nothing and a fake device whose free memory is what the loaded models leave, as a GPU's is.
tests/integration/test_devices_fit.py runs the same rules on real llama.cpp RPC devices."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from ollama_magic.engine.jobs import LoadOptions
from ollama_magic.engine.planner import DeviceRoom, LoadPlan, plan
from ollama_magic.engine.scheduler import Scheduler
from ollama_magic.errors import EngineError

from test_planner import GEOM, MIB, OPTIONS, probe
from test_scheduler import Factory

DEVICE_TOTAL = 200 * MIB  # one model's 11 layers (105 MiB + KV + compute) fit; two do not


class FakeDevice:
    def __init__(self, scheduler: "list[Scheduler]") -> None:
        self._scheduler = scheduler

    def __call__(self) -> list[Any]:
        used = sum(e.shares.get("GPU0", 0) for s in self._scheduler for e in [*s._loaded.values(), *s._expiring.values()])
        return [type("Device", (), {"name": "GPU0", "kind": "GPU", "free": DEVICE_TOTAL - used})()]


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    holder: list[Scheduler] = []
    made = Scheduler(max_loaded=3, budget=1 << 40, runner_factory=Factory(), devices=FakeDevice(holder))
    holder.append(made)
    yield made
    made.shutdown()


def planner(options: LoadOptions = OPTIONS, explicit: bool = False) -> Any:
    def place(rooms: list[DeviceRoom]) -> LoadPlan:
        return plan(GEOM, options, rooms, probe, explicit_gpu=explicit)
    return place


def load(scheduler: Scheduler, name: str, options: LoadOptions = OPTIONS) -> Any:
    entry, _ = scheduler.acquire((name, False), options, Path(f"/models/{name}.gguf"),
                                 lambda runner: dict(name=name, digest=name, size=0, size_vram=0, details={},
                                                     context_length=runner.n_ctx),
                                 planner=planner(options))
    return entry


def test_a_model_that_would_fit_the_device_better_evicts_the_idle_one_holding_it(scheduler: Scheduler) -> None:
    first = load(scheduler, "a")
    assert first.runner.load_options.num_gpu == 11 and first.shares["GPU0"] > 100 * MIB
    scheduler.release(first, 300)
    second = load(scheduler, "b")
    assert first.runner.closed and second.runner.load_options.num_gpu == 11
    assert [e.name for e in scheduler.loaded()] == ["b"]


def test_while_the_device_s_model_is_busy_the_next_one_loads_beside_it_on_the_cpu(scheduler: Scheduler) -> None:
    busy = load(scheduler, "a")
    second = load(scheduler, "b")
    assert not busy.runner.closed
    assert second.runner.load_options.num_gpu < 11 and second.shares["CPU"] > 20 * MIB


def test_preview_says_what_a_load_would_unload_and_unloads_nothing(scheduler: Scheduler) -> None:
    first = load(scheduler, "a")
    scheduler.release(first, 300)
    placed, evicted = scheduler.preview(planner())
    assert evicted == ["a"] and placed.options.num_gpu == 11 and not first.runner.closed


def test_a_load_that_fits_nowhere_is_refused_before_loading_and_the_loaded_ones_keep_working() -> None:
    factory = Factory()
    small = Scheduler(max_loaded=3, budget=60 * MIB, runner_factory=factory, devices=lambda: [])
    try:
        with pytest.raises(EngineError, match=r"model requires more system memory \(140 MB\) than is available"):
            load(small, "big")
        assert factory.built == [] and small.loaded() == []
    finally:
        small.shutdown()
