"""Scenarios of the memory planner on real llama.cpp RPC devices, each run in its own child process by
test_devices_rpc.py (RPC devices stay in a process's registry for good once added). Usage:
``python rpc_scenarios.py SCENARIO STORE_ROOT ENDPOINT[,ENDPOINT] [ARG]``; prints one JSON line."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from typing import Any

from ollama_magic.engine import Engine, devices
from ollama_magic.engine.llama_log import llama_log
from ollama_magic.store import ModelStore

GREEDY = {"temperature": 0, "num_predict": 8, "num_ctx": 2048}
PROMPT = "The three primary colours are"
SMALL = {"num_ctx": 2048}


def placement(engine: Engine, name: str) -> dict[str, Any]:
    """The loaded model's plan (per device) and what llama.cpp allocated (per device)."""
    [entry] = [e for e in engine.scheduler.loaded() if e.name == name]
    plan = entry.plan
    return {
        "planned": {s.name: s.total for s in plan.shares if s.total},
        "layers": {s.name: s.layers for s in plan.shares},
        "kv_planned": {s.name: s.kv_cache for s in plan.shares},
        "allocated": {n: b.total for n, b in entry.runner.allocated.devices.items()},
        "kv_allocated": {n: b.kv for n, b in entry.runner.allocated.devices.items()},
        "num_gpu": plan.options.num_gpu, "tensor_split": list(plan.options.tensor_split),
        "size_vram": next(m.size_vram for m in engine.ps().models if m.model == name),
        "devices": next(m.devices for m in engine.ps().models if m.model == name),
    }


def text(engine: Engine, model: str, **options: Any) -> str:
    return engine.generate(model, PROMPT, options={**GREEDY, **options}).response


def device_room(engine: Engine, model: str, share: float) -> int:
    """Room on one device for its compute buffer and ``share`` of the model's layers (weights + KV),
    from a plan with no overhead (the whole model on the first device)."""
    frame = engine.plan(model, SMALL)
    row = frame[frame.kind == "RPC"].iloc[0]
    return int(row.compute + share * (row.weights + row.kv_cache))


def main() -> None:
    scenario, root, endpoints = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    for endpoint in endpoints:
        devices.add_rpc_server(endpoint)
    engine = Engine(ModelStore(root))
    out: dict[str, Any] = {}
    free = min(d.free for d in devices.offload_devices())
    if scenario == "one-device":
        out["cpu_text"] = text(engine, "smollm2:135m", num_gpu=0)
        engine.unload("smollm2:135m")
        out["text"] = text(engine, "smollm2:135m")
        out.update(placement(engine, "smollm2:135m"))
    elif scenario in ("split", "partial"):
        share = 0.6 if scenario == "split" else 0.4  # of the model's layers each device has room for
        os.environ["OLLAMA_GPU_OVERHEAD"] = str(free - device_room(engine, "smollm2:135m", share))
        out["cpu_text"] = text(engine, "smollm2:135m", num_gpu=0)
        engine.unload("smollm2:135m")
        out["text"] = text(engine, "smollm2:135m")
        out.update(placement(engine, "smollm2:135m"))
    elif scenario == "evict":
        os.environ["OLLAMA_GPU_OVERHEAD"] = str(free - device_room(engine, "gemma3:270m", 1.05))
        engine.load("smollm2:135m", keep_alive=300)
        engine.generate("smollm2:135m", PROMPT, options=GREEDY)
        out["first"] = placement(engine, "smollm2:135m")
        out["evicts"] = engine.plan("gemma3:270m", SMALL).attrs["evicts"]
        engine.generate("gemma3:270m", PROMPT, options=GREEDY)
        out["loaded"] = [m.model for m in engine.ps().models]
        out["second"] = placement(engine, "gemma3:270m")
        os.environ["OLLAMA_GPU_OVERHEAD"] = str(free * 2)  # no device has room now
        engine.scheduler.budget = 50 << 20  # nor the CPU
        try:
            engine.embed("all-minilm", "x")
            out["refused"] = ""
        except Exception as exc:  # noqa: BLE001 - the error a user sees
            out["refused"] = f"{type(exc).__name__}: {exc}"
        out["still"] = text(engine, "gemma3:270m")  # the loaded model keeps working
    elif scenario == "kv":
        os.environ["OLLAMA_KV_CACHE_TYPE"] = sys.argv[4]
        lines: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
        llama_log.addHandler(handler)
        llama_log.setLevel(logging.DEBUG)
        out["text"] = text(engine, "smollm2:135m")
        out.update(placement(engine, "smollm2:135m"))
        out["kv_lines"] = [line for line in lines if line.startswith("llama_kv_cache: size")]
    elif scenario == "worker-dies":
        pid = int(sys.argv[4])
        stream = engine.generate("smollm2:135m", "Tell me a long story about the sea.",
                                 options={"temperature": 0, "num_predict": 2000, **SMALL}, stream=True)
        pieces = 0
        try:
            for _ in stream:
                pieces += 1
                if pieces == 3:
                    os.kill(pid, signal.SIGKILL)
            out["error"] = ""
        except Exception as exc:  # noqa: BLE001 - the error a user sees
            out["error"] = f"{type(exc).__name__}: {exc}"
        out["pieces"] = pieces
        out["loaded"] = [m.model for m in engine.ps().models]
        out["cpu_text"] = text(engine, "smollm2:135m", num_gpu=0)  # the engine keeps serving
        out["threads"] = threading.active_count()
    print(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)  # a model stuck on a dead worker cannot be freed: do not wait for it at exit


if __name__ == "__main__":
    main()
