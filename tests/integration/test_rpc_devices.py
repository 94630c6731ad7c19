"""Other machines' devices through llama.cpp's RPC backend, with two real workers on 127.0.0.1.

Everything that adds a worker runs in a child process: RPC devices stay in ggml's registry for the
life of a process, so adding them here would put every later test's layers on them (see the
``rpc_workers`` fixture)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import llama_cpp
import pytest

from .conftest import RPC_BUILD_HINT, RpcWorker

pytestmark = pytest.mark.skipif(not llama_cpp.llama_supports_rpc(), reason=RPC_BUILD_HINT)

PROMPT = "The three primary colours are"


def child(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


def answer(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


LIST_DEVICES = """
import json, sys
from ollama_magic.engine import devices
endpoints = sys.argv[1].split(",")
added = [d.name for e in endpoints for d in devices.add_rpc_server(e)]
again = [d.name for d in devices.add_rpc_server(endpoints[0].replace("127.0.0.1", "localhost"))]
print(json.dumps({"added": added, "again": again, "servers": devices.rpc_servers(),
                  "devices": [d.__dict__ for d in devices.devices()],
                  "offload": [d.name for d in devices.offload_devices()]}))
"""


def test_workers_are_devices_with_their_memory(rpc_workers: list[RpcWorker]) -> None:
    endpoints = [w.endpoint for w in rpc_workers]
    got = answer(child(LIST_DEVICES, ",".join(endpoints)))
    names = [f"RPC0[{e}]" for e in endpoints]  # each worker serves one device: its index there is 0
    assert got["added"] == names
    assert got["again"] == names[:1]  # the same worker by another name is not a second client
    assert got["servers"] == endpoints
    rpc = [d for d in got["devices"] if d["kind"] == "RPC"]
    assert [(d["name"], d["description"]) for d in rpc] == list(zip(names, endpoints))
    assert all(d["reachable"] and 0 < d["free"] <= d["total"] for d in rpc)
    assert got["offload"] == names  # llama.cpp's default offload list: RPC devices first
    assert [d["kind"] for d in got["devices"]].count("CPU") == 1


RAW_ADD = """
import sys
import time
from ollama_magic.engine import devices
devices._ggml().rpc_add_server()(sys.argv[1].encode())
"""

CHECKED_ADD = """
import sys
import time
from ollama_magic.engine import devices
try:
    devices.add_rpc_server(sys.argv[1])
except Exception as exc:
    print(type(exc).__name__, exc)
print(devices.rpc_servers())
"""


def test_a_dead_worker_is_one_error_where_llama_cpp_would_end_the_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    raw = child(RAW_ADD, dead, timeout=60)
    assert raw.returncode < 0 and f"Failed to connect to {dead}" in raw.stderr  # GGML_ABORT: the process is gone
    checked = child(CHECKED_ADD, dead, timeout=60)
    assert checked.returncode == 0, checked.stderr
    refused = f"EngineError RPC worker {dead} does not answer: [Errno 111] Connection refused"
    assert checked.stdout.splitlines() == [refused, "[]"]


GREEDY = """
import json, logging, sys
from ollama_magic.engine import Engine, devices
from ollama_magic.store import ModelStore
root, endpoints, n, prompt = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
lines = []
handler = logging.Handler()
handler.emit = lambda record: lines.append(record.getMessage())
log = logging.getLogger("ollama_magic.llama_cpp")
log.setLevel(logging.DEBUG)
log.addHandler(handler)
options = {"temperature": 0, "seed": 1, "num_predict": n, "num_ctx": 512}
with Engine(ModelStore(root)) as engine:
    cpu = engine.generate("smollm2:135m", prompt, raw=True, options={**options, "num_gpu": 0})
    engine.unload("smollm2:135m")
    for endpoint in endpoints:
        devices.add_rpc_server(endpoint)
    del lines[:]
    rpc = engine.generate("smollm2:135m", prompt, raw=True, options=options)
    ps = engine.ps().models[0]
print(json.dumps({"cpu": list(cpu.context), "rpc": list(rpc.context), "cpu_text": cpu.response,
                  "rpc_text": rpc.response, "log": lines, "gpu_layers": ps.gpu_layers, "layers": ps.layers}))
"""


def greedy_runs(root: Path, workers: list[RpcWorker], n: int) -> dict:
    return answer(child(GREEDY, str(root), ",".join(w.endpoint for w in workers), str(n), PROMPT))


def test_all_layers_go_to_the_workers_and_the_first_tokens_match_the_cpu(
        rpc_workers: list[RpcWorker], registered_root: Path) -> None:
    got = greedy_runs(registered_root, rpc_workers, 8)
    buffers = {m.group(1): float(m.group(2)) for line in got["log"]
               if (m := re.search(r"load_tensors:\s+(RPC\d\[[\d.:]+\]) model buffer size =\s+([\d.]+) MiB", line))}
    # a buffer is named by the worker's own device index and endpoint: each worker serves one device, 0.
    # Which worker takes how much is the planner's (one that fits them all may take them all).
    assert buffers and set(buffers) <= {f"RPC0[{w.endpoint}]" for w in rpc_workers}, got["log"]
    assert sum(buffers.values()) > 50  # smollm2's repeating layers (its token table stays on the CPU)
    assert any("offloaded 31/31 layers to GPU" in line for line in got["log"])
    assert (got["gpu_layers"], got["layers"]) == (31, 31)
    assert got["rpc"] == got["cpu"] and got["rpc_text"] == got["cpu_text"] and got["cpu_text"]


WORKER_DIES = """
import ctypes, json, os, signal, sys, threading, time
import llama_cpp
from ollama_magic.engine import devices

endpoint, worker_pid, gguf, guard = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4] == "guard"
told = []
if guard:
    devices.on_rpc_abort(lambda message, dead: told.append(dead))

def load(devs):
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = -1
    if devs is not None:  # a NULL-terminated list: [] is no device at all, every layer on the CPU
        load.keep = (ctypes.c_void_p * (len(devs) + 1))(*devs, None)
        params.devices = ctypes.addressof(load.keep)
    model = llama_cpp.llama_model_load_from_file(gguf, params)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = 256
    return model, llama_cpp.llama_init_from_model(model, cparams)

def greedy(model, ctx, n):
    vocab = llama_cpp.llama_model_get_vocab(model)
    text = b"The three primary colours are"
    fed = (llama_cpp.llama_token * 64)()
    count, out = llama_cpp.llama_tokenize(vocab, text, len(text), fed, 64, True, False), []
    for _ in range(n):
        assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(fed, count)) == 0
        logits = llama_cpp.llama_get_logits_ith(ctx, -1)
        out.append(max(range(llama_cpp.llama_vocab_n_tokens(vocab)), key=lambda i: logits[i]))
        fed, count = (llama_cpp.llama_token * 1)(out[-1]), 1
    return out

devices.add_rpc_server(endpoint)
model, ctx = load(None)
before = greedy(model, ctx, 4)
os.kill(worker_pid, signal.SIGKILL)
runner = threading.Thread(target=greedy, args=(model, ctx, 4), daemon=True)
runner.start()
runner.join(20)
listed = [(d.name, d.reachable) for d in devices.devices()]
cpu_model, cpu_ctx = load([])
print(json.dumps({"before": before, "cpu_only": greedy(cpu_model, cpu_ctx, 4), "told": told,
                  "runner_stuck": runner.is_alive(), "listed": listed}), flush=True)
os._exit(0)
"""


@pytest.mark.parametrize("guard", ["guard", "no-guard"])
def test_a_worker_that_dies_mid_request_leaves_the_process_serving_cpu_models(
        tmp_path: Path, smollm2_gguf: Path, guard: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "ollama_magic", "rpc-server", "--port", str(port),
                                   "--threads", "1"], stdout=out, stderr=subprocess.STDOUT)
    try:
        from ollama_magic.engine import devices

        for _ in range(300):
            if devices.probe(f"127.0.0.1:{port}", timeout=2) is None:
                break
            time.sleep(0.2)
        done = child(WORKER_DIES, f"127.0.0.1:{port}", str(worker.pid), str(smollm2_gguf), guard, timeout=240)
    finally:
        worker.kill()
        worker.wait()
    if guard == "no-guard":  # llama.cpp's own behaviour: the whole process is gone
        assert done.returncode < 0 and "Remote RPC server crashed" in done.stderr
        return
    got = answer(done)
    assert got["told"] == [[f"127.0.0.1:{port}"]]
    assert got["runner_stuck"]  # the cost: that model's decoding thread never comes back
    assert got["listed"] == [["CPU", True], [f"RPC0[127.0.0.1:{port}]", False]]
    assert got["cpu_only"] == got["before"]
