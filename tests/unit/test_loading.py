"""Sizing a load (engine/loading.py): the load options llama.cpp gets are checked first, and the bytes a
load takes are weights + the KV cache of every slot + compute buffers + the projector. No model is
loaded here (llama.cpp's compute-buffer probe is replaced by a fixed report)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ollama_magic.errors import InvalidRequest
from ollama_magic.engine import planner
from ollama_magic.engine.buffer_report import BufferReport, Buffers
from ollama_magic.engine.loading import kv_cache_bytes, load_options, plan_load
from ollama_magic.store.gguf_meta import GGUFInfo

#: smollm2:135m's attention dimensions
SMOLLM2 = {"llama.block_count": 30, "llama.attention.head_count": 9, "llama.attention.head_count_kv": 3,
           "llama.embedding_length": 576, "llama.context_length": 8192}


@dataclass
class FakeRecord:
    model_path: Path
    metadata: dict[str, Any]
    projector_paths: list[Path] = field(default_factory=list)
    adapter_paths: list[Path] = field(default_factory=list)

    def gguf_info(self) -> GGUFInfo:
        return GGUFInfo(metadata={"general.architecture": "llama", **self.metadata})


@pytest.fixture
def record(tmp_path: Path) -> FakeRecord:
    weights = tmp_path / "weights.gguf"
    weights.write_bytes(b"\0" * 1000)
    return FakeRecord(weights, dict(SMOLLM2))


def opts(**options: Any) -> dict[str, Any]:
    return {"num_ctx": 4096, "num_batch": 512, "num_gpu": -1, "num_thread": 0, **options}


@pytest.mark.parametrize("name, value, allowed", [
    ("num_batch", 0, "at least 1"),
    ("num_batch", -3, "at least 1"),
    ("num_ctx", 0, "at least 1"),
    ("num_ctx", -1, "at least 1"),
    ("num_thread", 100_000, "at most 512 (0: one per physical core)"),
    ("num_gpu", 2**40, "at most 2147483647 (-1: every layer that fits)"),
    ("num_ctx", "many", "an integer"),
])
def test_a_load_option_llama_cpp_must_not_see_is_one_clear_400(record: FakeRecord, name: str, value: Any,
                                                               allowed: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        load_options(record, opts(**{name: value}), embedding=False, parallel=4, offload=True)
    assert raised.value.status_code == 400
    assert str(raised.value) == f'option "{name}" must be {allowed}, got {value!r}'


def test_num_ctx_is_clamped_to_four_and_to_the_trained_context_as_ollama_does(record: FakeRecord) -> None:
    assert load_options(record, opts(num_ctx=2), embedding=False, parallel=4).num_ctx == 4
    assert load_options(record, opts(num_ctx=10**9), embedding=False, parallel=4).num_ctx == 8192


def test_without_a_trained_context_num_ctx_must_fit_llama_cpp_s_32_bit_context(record: FakeRecord) -> None:
    del record.metadata["llama.context_length"]
    assert load_options(record, opts(num_ctx=100_000), embedding=False, parallel=4).num_ctx == 100_000
    with pytest.raises(InvalidRequest, match='"num_ctx" must be at most 536870911 with 4 parallel'):
        load_options(record, opts(num_ctx=2**30), embedding=False, parallel=4)


def test_num_batch_is_at_most_num_ctx_and_an_embedding_decodes_a_whole_context(record: FakeRecord) -> None:
    assert load_options(record, opts(num_ctx=256, num_batch=4096), embedding=False, parallel=4).num_batch == 256
    embed = load_options(record, opts(num_ctx=256, num_batch=8), embedding=True, parallel=4)
    assert (embed.num_batch, embed.num_parallel) == (256, 1)


def test_negative_num_thread_and_num_gpu_mean_choose_as_in_ollama(record: FakeRecord) -> None:
    load = load_options(record, opts(num_thread=-1, num_gpu=-7), embedding=False, parallel=4, offload=True)
    assert (load.num_thread, load.num_gpu) == (0, -1)
    assert load_options(record, opts(num_gpu=-1), embedding=False, parallel=4, offload=False).num_gpu == 0


def test_the_kv_cache_counts_every_layer_s_kv_heads() -> None:
    info = GGUFInfo(metadata={"general.architecture": "llama", **SMOLLM2})
    assert kv_cache_bytes(info, 1000) == 1000 * 30 * 3 * (64 + 64) * 2  # head width 576 / 9 = 64


def test_per_layer_kv_heads_count_layer_by_layer_and_a_layer_without_attention_has_no_cache() -> None:
    info = GGUFInfo(metadata={"general.architecture": "lfm2", "lfm2.block_count": 4, "lfm2.embedding_length": 64,
                              "lfm2.attention.head_count": 4, "lfm2.attention.head_count_kv": [0, 2, 0, 2]})
    assert kv_cache_bytes(info, 10) == 10 * (2 + 2) * (16 + 16) * 2


def test_a_load_on_the_cpu_is_its_weights_the_kv_cache_of_every_slot_the_compute_buffers_and_the_projector(
        record: FakeRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    projector = tmp_path / "mmproj.gguf"
    projector.write_bytes(b"\0" * 300)
    record.projector_paths = [projector]
    compute = BufferReport(devices={"CPU": Buffers(compute=5000, output=70)})
    monkeypatch.setattr(planner, "probe_for", lambda path, devices=(): lambda options: compute)
    plan = plan_load(record, opts(num_ctx=1024), embedding=False, parallel=4, offload=False)
    one_slot = kv_cache_bytes(record.gguf_info(), 1024)
    assert plan.kv_cache == 4 * one_slot
    assert plan.size == 4 * one_slot + 5070 + 300  # the fake's header has no tensors: no weights
    assert plan.options.projector == str(projector)
    assert [s.name for s in plan.shares] == ["CPU"] and plan.size_vram == 0
