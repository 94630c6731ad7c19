"""The memory planner on real llama.cpp loads (engine/planner.py): what it plans before a load is
what llama.cpp then allocates, on every embedded model; ``Engine.plan`` and ``%ollama plan`` show it
before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_magic.engine import Engine
from ollama_magic.errors import InvalidRequest
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration

EMBEDDED = ["smollm2:135m", "gemma3:270m", "all-minilm"]


@pytest.mark.parametrize("model", EMBEDDED)
def test_planned_bytes_are_within_10_percent_of_what_llama_cpp_allocated(registered: ModelStore, model: str) -> None:
    with Engine(registered) as engine:
        planned = engine.plan(model)
        engine.embed(model, "x") if model == "all-minilm" else engine.load(model)
        [loaded] = engine.ps().models
    assert list(planned.device) == ["CPU"] and planned.attrs["fits"]
    assert abs(planned.attrs["size"] - loaded.size) <= 0.10 * loaded.size, (planned.attrs["size"], loaded.size)
    assert loaded.devices == {"CPU": loaded.size}


def test_engine_plan_shows_the_fit_before_loading_and_lowers_what_does_not_fit(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        frame = engine.plan("smollm2:135m", num_ctx=4096, parallel=4)
        assert engine.ps().models == []  # nothing loaded
        row = frame.iloc[0]
        assert (row.device, row.layers, bool(row.fits)) == ("CPU", 31, True)
        assert row.total == row.weights + row.kv_cache + row.compute and row.compute > 0
        assert frame.attrs["largest_num_ctx"] == 8192  # smollm2's trained context
        with pytest.raises(InvalidRequest, match="kv_cache_type must be one of f16, q8_0, q4_0"):
            engine.plan("smollm2:135m", kv_cache_type="q5_1")
        engine.scheduler.budget = int(row.total * 0.6)  # less RAM than 4 slots take: fewer slots
        smaller = engine.plan("smollm2:135m", num_ctx=4096, parallel=4)
        assert smaller.attrs["parallel"] < 4 and smaller.attrs["notes"][0].startswith("lowered parallel slots 4 -> ")
        engine.scheduler.budget = 10 << 20  # 10 MiB: nothing fits
        refused = engine.plan("smollm2:135m")
        assert not refused.attrs["fits"] and refused.attrs["notes"][0].startswith("model requires more system memory")
        with pytest.raises(Exception, match="model requires more system memory"):
            engine.load("smollm2:135m")
        assert engine.ps().models == []


def test_a_second_model_that_does_not_fit_beside_an_idle_one_unloads_it(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        engine.load("smollm2:135m")
        [first] = engine.ps().models
        engine.scheduler.budget = int(first.size * 1.5)  # room for one of them, not both
        assert engine.plan("gemma3:270m").attrs["evicts"] == ["smollm2:135m"]
        engine.load("gemma3:270m")
        assert [m.model for m in engine.ps().models] == ["gemma3:270m"]


def test_percent_ollama_plan_in_a_notebook(notebook_shell, clone_registered, tmp_path: Path) -> None:
    ip = notebook_shell(clone_registered(tmp_path / "models").root)
    frame = ip.run_line_magic("ollama", "plan smollm2:135m --num-ctx 2048 --parallel 2")
    assert list(frame.columns) == ["device", "kind", "layers", "weights", "kv_cache", "compute", "total",
                                   "available", "fits"]
    assert frame.attrs["caption"].startswith("smollm2:135m: num_ctx 2048 x 2 slots, 0/31 layers on devices")
    assert "<p>smollm2:135m: num_ctx 2048" in frame._repr_html_()
