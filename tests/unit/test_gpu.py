"""Where a loaded model's layers run, as ``ollama-magic ps`` and ``%ollama status`` report it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ollama_magic.engine.gpu import gpu_offload_supported, offloaded_layers, total_layers
from ollama_magic.formatting import PS_HEADER, gpu_layers, gpu_offload, ps_rows
from ollama_magic.types import RunningModel, RunningModels


@pytest.mark.parametrize(("num_gpu", "offload", "expected"), [
    (-1, True, 31),   # Ollama's default: every block and the output layer
    (999, True, 31),  # more than there are
    (10, True, 10),   # a partial offload
    (0, True, 0),     # num_gpu 0: CPU
    (-1, False, 0),   # a CPU-only build offloads nothing, whatever num_gpu says
])
def test_offloaded_layers_follow_llama_cpp(num_gpu: int, offload: bool, expected: int) -> None:
    assert total_layers(30) == 31
    assert offloaded_layers(num_gpu, 30, offload) == expected


def test_this_build_is_cpu_only() -> None:
    # No GPU and no RPC worker in this test: nothing to offload to (an RPC-enabled build has no device
    # until a worker is added).
    assert gpu_offload_supported() is False


def test_ps_rows_show_gpu_layers_next_to_the_processor() -> None:
    until = datetime.now(timezone.utc) + timedelta(minutes=4, seconds=30)
    cpu = RunningModel(model="smollm2:135m", digest="a" * 64, size=120_000_000, size_vram=0, context_length=2048,
                       expires_at=until, gpu_layers=0, layers=31)
    split = RunningModel(model="big:latest", digest="b" * 64, size=1_000, size_vram=500, context_length=4096,
                         expires_at=until, gpu_layers=16, layers=31,
                         devices={"CPU": 500, "RPC0[10.0.0.2:50052]": 500})
    ollama_entry = RunningModel(model="theirs:latest", digest="c" * 64, size=1_000, size_vram=1_000, expires_at=until)
    rows = ps_rows([cpu, split, ollama_entry])
    assert PS_HEADER[3:5] == ["PROCESSOR", "GPU LAYERS"]
    assert [r[3:5] for r in rows] == [["100% CPU", "0/31"], ["50%/50% CPU/GPU", "16/31"], ["100% GPU", ""]]
    assert rows[0][6] == "4 minutes from now"
    assert [r[7] for r in rows] == ["", "CPU 500 B, RPC0[10.0.0.2:50052] 500 B", ""]  # llama.cpp's bytes per device


def test_gpu_offload_says_yes_no_or_unknown() -> None:
    assert gpu_offload(False).startswith("no: CPU only")
    assert gpu_offload(True).startswith("yes")
    assert gpu_offload(None) == "not reported by this server"  # a real Ollama server has no such field
    assert gpu_layers(RunningModel(model="x")) == ""


def test_running_models_reads_ollamas_ps_and_ours() -> None:
    theirs = RunningModels.model_validate({"models": [{"model": "llama3.2:latest", "size": 10, "size_vram": 10}]})
    assert theirs.gpu_offload is None and theirs.models[0].gpu_layers is None
    ours = RunningModels.model_validate({"models": [{"model": "smollm2:135m", "size": 10, "size_vram": 0,
                                                     "gpu_layers": 0, "layers": 31}], "gpu_offload": False})
    assert ours.gpu_offload is False and gpu_layers(ours.models[0]) == "0/31"
