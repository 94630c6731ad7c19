"""The recorded llama.cpp report the planner's unit tests check against (``tests/fixtures/model_shapes.py``
``REFERENCE``) is what the pinned llama.cpp says today: each shape's file is loaded with ``no_alloc``
(nothing read, nothing allocated: the files are sparse holes of up to 40 GiB) and every recorded probe is
re-measured through ``engine.buffer_report.probe``. A llama.cpp upgrade that changes a number fails here,
and the recording is rewritten from this test's output. About 0.1 s per probe.
"""

from __future__ import annotations

import resource
from dataclasses import replace
from typing import Any
import sys
from pathlib import Path

import llama_cpp
import pytest

from ollama_magic.engine import llama_log  # noqa: F401 - routes llama.cpp's log before the first load
from ollama_magic.engine.buffer_report import MIB, probe
from ollama_magic.engine.geometry import geometry
from ollama_magic.store.gguf_meta import read_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import model_shapes as ms

pytestmark = pytest.mark.integration
_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}  # ggml_type numbers


def _mparams() -> llama_cpp.llama_model_params:
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    mparams.use_extra_bufts = False
    return mparams


def _cparams(p: ms.Probe) -> llama_cpp.llama_context_params:
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = p.num_ctx * p.parallel
    cparams.n_seq_max = p.parallel
    cparams.kv_unified = True
    cparams.n_batch = cparams.n_ubatch = ms.N_UBATCH
    cparams.n_threads = cparams.n_threads_batch = 1
    cparams.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if p.flash
                               else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    cparams.type_k = cparams.type_v = _TYPES[p.kv_type]
    cparams.swa_full = p.swa_full
    return cparams


def _model_size(path: Path) -> int:
    """llama.cpp's own count of the weights' bytes (its no_alloc model buffer line reads 0.00 MiB)."""
    llama_cpp.llama_backend_init()
    mparams = _mparams()
    mparams.no_alloc = True
    mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
    assert model, f"llama.cpp refused {path.name}"
    try:
        return llama_cpp.llama_model_size(model)
    finally:
        llama_cpp.llama_model_free(model)


@pytest.mark.parametrize("name", list(ms.SHAPES))
def test_recorded_report_is_llama_cpps(tmp_path: Path, name: str) -> None:
    path = ms.write_shape(ms.SHAPES[name], tmp_path / f"{name}.gguf")
    reference = ms.REFERENCE[name]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert _model_size(path) == reference.weights == geometry(read_gguf(path)).weights
    for p, recorded in reference.probes.items():
        report = probe(path, _mparams(), _cparams(p))
        assert report.kv_total == sum(round(mib * MIB) for _, _, mib in recorded.kv), p
        assert report.devices["CPU"].compute == round(recorded.compute * MIB), p
        assert report.devices["CPU"].output == round(recorded.output * MIB), p
        assert report.devices["CPU"].model == 0 and report.devices["CPU"].kv == 0  # no_alloc: nothing allocated
    # nothing was read or allocated: the weights alone are 4.6 to 40 GiB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 512 * 1024  # KiB


def test_probe_leaves_the_callers_model_params_alone(tmp_path: Path) -> None:
    """The planner probes with the params it will load with: a probe that turns them into no_alloc ones
    makes the real load that follows allocate nothing."""
    path = ms.write_shape(ms.LLAMA_8B, tmp_path / "llama.gguf")
    mparams = _mparams()
    probe(path, mparams, _cparams(ms.Probe(4096, 1, "f16", flash=True, swa_full=True)))
    assert not mparams.no_alloc and mparams.load_mode == _mparams().load_mode


@pytest.mark.parametrize("name", list(ms.SHAPES))
def test_the_planner_sizes_a_load_as_llama_cpp_does_at_sizes_ci_cannot_load(tmp_path: Path, name: str) -> None:
    """The whole plan of each shape at 4096 x 4 on the CPU (weights, KV, compute, logits) against
    llama.cpp's no_alloc report of the same load; then the 8B and 70B on a 6 GiB device: the device
    takes the last layers that fit, the CPU the rest, and the plan stays within the device's room."""
    from ollama_magic.engine.jobs import LoadOptions
    from ollama_magic.engine.planner import DeviceRoom, plan, probe_for

    path = ms.write_shape(ms.SHAPES[name], tmp_path / f"{name}.gguf")
    geom = geometry(read_gguf(path))
    options = LoadOptions(num_ctx=4096, num_batch=512, num_gpu=-1, num_thread=1, use_mmap=True, num_parallel=4)
    on_cpu = plan(geom, options, [DeviceRoom("CPU", "CPU", 1 << 42)], probe_for(path), explicit_gpu=False)
    report = probe(path, _mparams(), _cparams(ms.Probe(4096, 4, "f16", flash=True, swa_full=True)))  # "auto": on
    llama_cpp_total = _model_size(path) + report.kv_total + report.devices["CPU"].compute + report.devices["CPU"].output
    assert abs(on_cpu.size - llama_cpp_total) <= 0.01 * llama_cpp_total, (on_cpu.size, llama_cpp_total)
    if name in ("llama3.1-8b", "llama3.1-70b"):
        device = DeviceRoom("GPU0", "GPU", 6 << 30)
        on_cpu_only = probe_for(path)  # no GPU here: llama.cpp measures the CPU's buffers, which stand in for it

        def cpu_probe(placed: LoadOptions) -> Any:
            return on_cpu_only(replace(placed, num_gpu=0, tensor_split=(), devices=()))

        split = plan(geom, options, [DeviceRoom("CPU", "CPU", 1 << 42), device], cpu_probe, explicit_gpu=False)
        cpu, gpu = split.shares
        assert 0 < gpu.layers < geom.layers and cpu.layers + gpu.layers == geom.layers
        assert gpu.total <= device.available and split.fits
