"""Whether the build can offload and how many layers each loaded model has on the GPU, as the engine,
``/api/ps``, ``ollama-magic ps`` and ``%ollama status`` report it. This machine has no GPU and a
CPU-only llama-cpp-python build: every model must say 0 layers on the GPU and "CPU"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from ollama_magic.engine import Engine
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration


def test_engine_ps_counts_gpu_layers_on_the_cpu_path(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        engine.load("smollm2:135m")
        running = engine.ps()
    assert running.gpu_offload is False
    [model] = running.models
    assert (model.gpu_layers, model.layers, model.size_vram) == (0, 31, 0)  # 30 blocks + the output layer
    # the size is what llama.cpp allocated (weights, KV cache, logits and compute buffers), all on the CPU
    assert model.devices == {"CPU": model.size} and model.size > 400 << 20


def test_api_ps_and_the_cli_ps_report_layers_and_offload(clone_registered, serve_process, tmp_path: Path) -> None:
    served = serve_process(clone_registered(tmp_path / "models").root)
    requests.post(f"{served.url}/api/generate", json={"model": "smollm2:135m", "stream": False}, timeout=300).raise_for_status()
    body = requests.get(f"{served.url}/api/ps", timeout=10).json()
    assert body["gpu_offload"] is False
    [model] = body["models"]
    assert (model["gpu_layers"], model["layers"], model["size_vram"]) == (0, 31, 0)
    done = subprocess.run([sys.executable, "-m", "ollama_magic", "ps"], env={**os.environ, **served.env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    header, row, offload = done.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "GPU", "LAYERS", "CONTEXT", "UNTIL", "DEVICES"]
    assert row.startswith("smollm2:135m") and "100% CPU     0/31" in row
    assert row.split("    ")[-1].startswith("CPU ") and row.endswith(" MB")  # DEVICES: llama.cpp's bytes
    assert offload.startswith("GPU offload: no: CPU only")


def test_ollama_status_says_where_each_loaded_model_runs(notebook_shell, clone_registered, tmp_path: Path) -> None:
    ip = notebook_shell(clone_registered(tmp_path / "models").root)
    assert "loaded:       nothing" in ip.run_line_magic("ollama", "status")
    ip.run_line_magic("ollama", "load smollm2:135m")
    status = ip.run_line_magic("ollama", "status")
    assert "GPU offload:  no: CPU only (no GPU backend in the llama-cpp-python build, no GPU found, no RPC worker added)" in status
    assert "loaded:       smollm2:135m (0/31 layers on devices, 100% CPU: CPU " in status  # llama.cpp's bytes
    running = ip.run_line_magic("ollama", "ps")
    assert list(running["gpu layers"]) == ["0/31"] and list(running.processor) == ["100% CPU"]
