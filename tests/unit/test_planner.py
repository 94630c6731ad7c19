"""The memory planner (engine/planner.py) on synthetic models: layers placed as llama-server's --fit
places them, slots then context lowered when memory is short, a clear refusal when nothing fits.
llama.cpp's compute-buffer probe is a fixed report here; tests/integration/test_devices_fit.py runs
the same rules on real llama.cpp devices."""

from __future__ import annotations

from dataclasses import replace

from ollama_magic.engine.buffer_report import BufferReport, Buffers
from ollama_magic.engine.geometry import Geometry
from ollama_magic.engine.jobs import LoadOptions
from ollama_magic.engine.planner import DeviceRoom, plan

MIB = 1 << 20
#: 10 blocks of 10 MiB, 1 MiB of KV per layer per 1024 cells (f16), 20 MiB input, 5 MiB output
GEOM = Geometry(architecture="llama", block_count=10, layer_weights=(10 * MIB,) * 10, input_weights=20 * MIB,
                output_weights=5 * MIB, tied_output=0, kv_widths=((128, 128),) * 10,
                swa_layers=(False,) * 10, swa_window=0)
KV_PER_LAYER = 1024 * 512  # 1024 cells x (128 + 128) values x 2 bytes
OPTIONS = LoadOptions(num_ctx=1024, num_batch=512, num_gpu=-1, num_thread=0, use_mmap=True, num_parallel=1)


def probe(options: LoadOptions) -> BufferReport:
    """4 MiB of compute on every device that takes layers (and on the CPU)."""
    devices = {"CPU": Buffers(compute=4 * MIB)}
    for i, count in enumerate(options.tensor_split):
        if count:
            devices[f"GPU{i}"] = Buffers(compute=4 * MIB)
    return BufferReport(devices=devices)


def rooms(cpu: int, *gpus: int) -> list[DeviceRoom]:
    return [DeviceRoom("CPU", "CPU", cpu), *(DeviceRoom(f"GPU{i}", "GPU", g) for i, g in enumerate(gpus))]


def test_on_the_cpu_alone_everything_is_the_cpu_s() -> None:
    placed = plan(GEOM, OPTIONS, rooms(1 << 40), probe, explicit_gpu=False)
    (cpu,) = placed.shares
    assert (cpu.layers, cpu.weights, cpu.kv_cache, cpu.compute) == (11, 125 * MIB, 10 * KV_PER_LAYER, 4 * MIB)
    assert placed.options.num_gpu == 0 and placed.fits and placed.size_vram == 0


def test_every_layer_goes_to_a_device_that_holds_them_all() -> None:
    placed = plan(GEOM, OPTIONS, rooms(1 << 40, 1 << 30), probe, explicit_gpu=False)
    cpu, gpu = placed.shares
    assert placed.options.num_gpu == 11 and placed.options.tensor_split == (11,)
    assert (gpu.layers, gpu.weights, gpu.kv_cache, gpu.compute) == (11, 105 * MIB, 10 * KV_PER_LAYER, 4 * MIB)
    assert cpu.weights == 20 * MIB  # the input embeddings stay on the CPU
    assert placed.size_vram == gpu.total


def test_a_small_device_takes_the_last_layers_that_fit_and_the_cpu_the_rest() -> None:
    room = 4 * MIB + 5 * MIB + 3 * (10 * MIB + KV_PER_LAYER)  # compute, output layer, three blocks
    placed = plan(GEOM, OPTIONS, rooms(1 << 40, room), probe, explicit_gpu=False)
    cpu, gpu = placed.shares
    assert gpu.layers == 4 and cpu.layers == 7 and placed.options.num_gpu == 4 and gpu.fits


def test_two_devices_fill_in_llama_cpp_s_order() -> None:
    room = 4 * MIB + 3 * (10 * MIB + KV_PER_LAYER)
    placed = plan(GEOM, OPTIONS, rooms(1 << 40, room, 1 << 30), probe, explicit_gpu=False)
    assert placed.options.tensor_split == (3, 8) and placed.options.num_gpu == 11
    assert [s.layers for s in placed.shares] == [0, 3, 8]


def test_gpu_overhead_is_the_room_the_caller_leaves_and_an_explicit_num_gpu_is_obeyed() -> None:
    placed = plan(GEOM, replace(OPTIONS, num_gpu=2), rooms(1 << 40, 1 << 30), probe, explicit_gpu=True)
    assert placed.options.num_gpu == 2 and [s.layers for s in placed.shares] == [9, 2]
    none = plan(GEOM, replace(OPTIONS, num_gpu=0), rooms(1 << 40, 1 << 30), probe, explicit_gpu=True)
    assert none.options.num_gpu == 0 and none.size_vram == 0


def test_the_slots_go_down_first_then_the_context_never_below_2048_and_the_plan_says_so() -> None:
    asked = replace(OPTIONS, num_ctx=8192, num_parallel=4)
    weights = 125 * MIB + 4 * MIB
    kv_one_slot_8k = 10 * KV_PER_LAYER * 8  # 8192 cells
    placed = plan(GEOM, asked, rooms(weights + kv_one_slot_8k), probe, explicit_gpu=False)
    assert (placed.options.num_parallel, placed.options.num_ctx) == (1, 8192) and placed.fits and placed.lowered
    assert placed.notes == ("lowered parallel slots 4 -> 1 to fit the memory (177 MB of 177 MB available)",)
    smaller = plan(GEOM, asked, rooms(weights + kv_one_slot_8k // 2), probe, explicit_gpu=False)
    assert (smaller.options.num_parallel, smaller.options.num_ctx) == (1, 4096)
    assert "num_ctx 8192 -> 4096" in smaller.notes[0]
    floor = plan(GEOM, asked, rooms(weights + kv_one_slot_8k // 8), probe, explicit_gpu=False)
    assert not floor.fits and floor.options.num_ctx == 8192  # 2048 does not fit either: the asked plan, refused


def test_a_load_that_cannot_fit_says_what_it_needs_and_has() -> None:
    placed = plan(GEOM, OPTIONS, rooms(50 * MIB), probe, explicit_gpu=False)
    assert not placed.fits
    assert placed.shortfall().startswith("model requires more system memory (")
    assert "CPU needs 140 MB and has 52 MB" in placed.shortfall()


def test_a_tied_output_costs_the_embeddings_again_only_where_the_output_layer_is_offloaded() -> None:
    tied = replace(GEOM, output_weights=0, tied_output=20 * MIB)
    on_cpu = plan(tied, OPTIONS, rooms(1 << 40), probe, explicit_gpu=False)
    offloaded = plan(tied, OPTIONS, rooms(1 << 40, 1 << 30), probe, explicit_gpu=False)
    assert on_cpu.weights == 120 * MIB and offloaded.weights == 140 * MIB


def test_a_device_whose_compute_buffer_is_larger_than_the_cpu_s_is_placed_again_with_the_measured_one() -> None:
    """The first placement reserves the CPU's compute buffer (4 MiB here) on each device; llama.cpp's
    dry run of that placement says 60 MiB on the device, so the layers are placed again with it."""
    def big_device_compute(options: LoadOptions) -> BufferReport:
        report = probe(options)
        for name in list(report.devices):
            if name != "CPU":
                report.devices[name] = Buffers(compute=60 * MIB)
        return report

    room = 60 * MIB + 2 * (10 * MIB + KV_PER_LAYER) + 5 * MIB  # the big compute, the output layer, two blocks
    placed = plan(GEOM, OPTIONS, rooms(1 << 40, room), big_device_compute, explicit_gpu=False)
    cpu, gpu = placed.shares
    assert placed.fits and gpu.compute == 60 * MIB and gpu.layers == 3 and cpu.layers == 8


def test_a_device_left_less_than_no_room_takes_nothing_and_the_load_fits_on_the_cpu() -> None:
    """OLLAMA_GPU_OVERHEAD larger than a device's free memory leaves it negative room: no layer goes
    there, and the load is not refused for it."""
    placed = plan(GEOM, OPTIONS, rooms(1 << 40, -(100 * MIB)), probe, explicit_gpu=False)
    cpu, gpu = placed.shares
    assert placed.fits and gpu.layers == 0 and cpu.layers == 11 and not placed.lowered
