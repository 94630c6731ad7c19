"""Planner accuracy: the bytes the memory planner plans per device before a load vs what llama.cpp
reports allocating, on every embedded model, on the CPU alone, on one RPC device and split over two.

Target (issue 24): within 10% per device. Two `ollama-magic rpc-server` workers on 127.0.0.1 are the
devices (llama.cpp devices with their own buffers, computing on the CPU); each configuration runs in
a child process, since RPC devices stay in a process's registry once added.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = ("cpu", "one device", "two devices")
#: on a machine with a GPU (bench/gpu.sh): its own devices, whole and with room for half the layers
GPU_CONFIGS = ("cpu", "gpu", "gpu partial")
MODELS = ("smollm2:135m", "gemma3:270m", "all-minilm")


def child(config: str, endpoints: list[str]) -> None:
    from ollama_magic.engine import devices

    sys.path.insert(0, str(Path(__file__).parent))
    from _models import engine_with

    added = {"one device": endpoints[:1], "two devices": endpoints}.get(config, [])
    for endpoint in added:
        devices.add_rpc_server(endpoint)
    share = {"two devices": 0.6, "gpu partial": 0.5}.get(config)  # of the layers each device has room for
    rows = []
    with engine_with(*MODELS) as engine:
        for model in MODELS:
            if config == "cpu":
                os.environ["OLLAMA_GPU_OVERHEAD"] = str(1 << 60)  # no device takes anything
            elif share is not None:  # room for the compute buffer and ``share`` of the layers on each device
                frame = engine.plan(model, {"num_ctx": 2048})
                row = frame[frame.kind != "CPU"].iloc[0]
                free = min(d.free for d in devices.offload_devices())
                os.environ["OLLAMA_GPU_OVERHEAD"] = str(free - int(row.compute + share * (row.weights + row.kv_cache)))
            engine.embed(model, "x") if model == "all-minilm" else engine.load(model)
            [entry] = [e for e in engine.scheduler.loaded() if e.name.startswith(model)]
            planned = {s.name: s.total for s in entry.plan.shares if s.total}
            allocated = {n: b.total for n, b in entry.runner.allocated.devices.items()}
            rows.append({"model": model, "planned": planned, "allocated": allocated})
            engine.unload(entry.name)
            os.environ.pop("OLLAMA_GPU_OVERHEAD", None)
    print(json.dumps(rows))
    sys.stdout.flush()
    os._exit(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "ENDPOINTS"), help=argparse.SUPPRESS)
    parser.add_argument("--gpu", action="store_true", help="this machine's GPU instead of two RPC workers")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], [e for e in args.child[1].split(",") if e != "-"])
        return
    if args.gpu:
        report(GPU_CONFIGS, [])
        return
    from ollama_magic.engine import devices

    ports = [free_port(), free_port()]
    workers = [subprocess.Popen([sys.executable, "-m", "ollama_magic", "rpc-server", "--port", str(p), "--threads", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    endpoints = [f"127.0.0.1:{p}" for p in ports]
    try:
        for endpoint in endpoints:
            while devices.probe(endpoint, timeout=2) is not None:
                time.sleep(0.2)
        report(CONFIGS, endpoints)
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(10)


def report(configs: tuple[str, ...], endpoints: list[str]) -> None:
    """One child process per configuration; a row per model and device."""
    print(f"{'configuration':<14} {'model':<14} {'device':<24} {'planned MB':>11} {'allocated MB':>13} {'plan/alloc':>10}")
    for config in configs:
        done = subprocess.run([sys.executable, __file__, "--child", config, ",".join(endpoints) or "-"],
                              capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        for row in json.loads(done.stdout.strip().splitlines()[-1]):
            for device, size in row["allocated"].items():
                planned = row["planned"].get(device, 0)
                print(f"{config:<14} {row['model']:<14} {device:<24} {planned / 1e6:>11.1f} {size / 1e6:>13.1f} "
                      f"{planned / size:>10.3f}", flush=True)

if __name__ == "__main__":
    main()
