"""The memory planner and scheduler on real llama.cpp devices: two RPC workers on 127.0.0.1, each a
llama.cpp device with its own buffers and memory report (computing on the CPU), run the code a CUDA
or Metal device goes through: offload, split, partial offload, per-device budgets, eviction, the KV
cache types, a worker that dies mid-request. Each scenario runs in a child process
(rpc_scenarios.py): RPC devices stay in a process's registry for good once added."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import llama_cpp
import pytest

from ollama_magic.store import ModelStore

from .conftest import RPC_BUILD_HINT, RpcWorker, _free_port, _stop

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not llama_cpp.llama_supports_rpc(), reason=RPC_BUILD_HINT)]
SCENARIOS = Path(__file__).with_name("rpc_scenarios.py")


def scenario(name: str, registered: ModelStore, endpoints: list[str], *extra: str) -> dict:
    done = subprocess.run([sys.executable, str(SCENARIOS), name, str(registered.root), ",".join(endpoints), *extra],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def within(planned: dict[str, int], allocated: dict[str, int], share: float = 0.10) -> None:
    """Per device, the plan is within ``share`` of what llama.cpp allocated."""
    assert set(planned) == set(allocated), (planned, allocated)
    for name, size in allocated.items():
        assert abs(planned[name] - size) <= share * size, (name, planned[name], size)


def test_a_model_that_fits_one_device_goes_there_whole(registered: ModelStore, rpc_workers: list[RpcWorker]) -> None:
    got = scenario("one-device", registered, [rpc_workers[0].endpoint])
    device = f"RPC0[{rpc_workers[0].endpoint}]"
    assert got["layers"] == {"CPU": 0, device: 31} and got["num_gpu"] == 31
    within(got["planned"], got["allocated"])
    assert got["size_vram"] == got["allocated"][device] and got["devices"] == got["allocated"]
    assert got["text"] == got["cpu_text"]  # greedy: the first 8 tokens equal the CPU-only run


def test_a_model_bigger_than_each_device_splits_over_two(registered: ModelStore, rpc_workers: list[RpcWorker]) -> None:
    got = scenario("split", registered, [w.endpoint for w in rpc_workers])
    first, second = (f"RPC0[{w.endpoint}]" for w in rpc_workers)
    assert got["layers"][first] > 0 and got["layers"][second] > 0 and got["layers"]["CPU"] == 0
    assert got["tensor_split"] == [got["layers"][first], got["layers"][second]]
    within(got["planned"], got["allocated"])
    assert got["text"] == got["cpu_text"]


def test_gpu_overhead_forces_a_partial_offload(registered: ModelStore, rpc_workers: list[RpcWorker]) -> None:
    got = scenario("partial", registered, [rpc_workers[0].endpoint])
    device = f"RPC0[{rpc_workers[0].endpoint}]"
    assert 0 < got["layers"][device] < 31 and got["layers"]["CPU"] == 31 - got["layers"][device]
    within(got["planned"], got["allocated"])
    assert 0 < got["size_vram"] < sum(got["allocated"].values())
    assert got["text"] == got["cpu_text"]


def test_a_second_model_evicts_an_idle_one_and_one_that_fits_nowhere_is_refused(
        registered: ModelStore, rpc_workers: list[RpcWorker]) -> None:
    got = scenario("evict", registered, [rpc_workers[0].endpoint])
    device = f"RPC0[{rpc_workers[0].endpoint}]"
    assert got["first"]["layers"][device] == 31
    assert got["evicts"] == ["smollm2:135m"] and got["loaded"] == ["gemma3:270m"]
    assert got["second"]["layers"][device] == 19  # gemma3: 18 blocks + the output layer, all on the device
    assert got["refused"].startswith("EngineError: model requires more system memory")
    assert got["still"]  # the loaded model kept working


@pytest.mark.parametrize("kv_type", ["q8_0", "q4_0"])
def test_quantized_kv_cache_on_a_device_is_planned_as_allocated(registered: ModelStore, rpc_workers: list[RpcWorker],
                                                                 kv_type: str) -> None:
    got = scenario("kv", registered, [rpc_workers[0].endpoint], kv_type)
    device = f"RPC0[{rpc_workers[0].endpoint}]"
    assert all(f"K ({kv_type})" in line for line in got["kv_lines"]) and got["kv_lines"]
    assert abs(got["kv_planned"][device] - got["kv_allocated"][device]) <= 0.01 * got["kv_allocated"][device]
    within(got["planned"], got["allocated"])
    assert got["text"]


def test_a_worker_that_dies_mid_request_fails_that_request_and_the_engine_serves_on(
        registered: ModelStore, tmp_path: Path) -> None:
    port, log = _free_port(), tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "ollama_magic", "rpc-server", "--port", str(port),
                                   "--threads", "1"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        from ollama_magic.engine import devices

        deadline = time.monotonic() + 60
        while devices.probe(f"127.0.0.1:{port}", timeout=2) is not None:
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()
            time.sleep(0.2)
        got = scenario("worker-dies", registered, [f"127.0.0.1:{port}"], str(worker.pid))
    finally:
        _stop([worker])
    assert got["pieces"] >= 3
    assert got["error"].startswith(f"EngineError: RPC worker 127.0.0.1:{port} stopped answering while model "
                                   "smollm2:135m used it")
    assert "smollm2:135m" not in got["loaded"] or len(got["loaded"]) == 1  # the stuck one is forgotten
    assert got["cpu_text"]  # a CPU-only load of the same model answers in the same process
