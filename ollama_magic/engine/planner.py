"""Fit one load to the memory of every device: the layers each device takes, and the context that fits.

One rule, in one module, asked by the scheduler before every load and by ``Engine.plan`` for a user:

- **What a load costs, per device.** Weights per layer and the KV cache per layer by cache type come
  from the GGUF tensor table (``geometry.py``: exact, and checked against llama.cpp's own report);
  the compute and logits buffers come from llama.cpp itself, through a ``no_alloc`` probe
  (``buffer_report.probe``), as ``common/fit.cpp`` does. Why the split: the tensor table answers "how
  much for k layers on that device" for every k at no cost, while the compute buffers depend on the
  graph llama.cpp builds (attention without flash attention holds a ``n_ctx x n_ubatch x n_head``
  matrix: on SmolLM2 at 4 x 4096 that is 326 MiB, more than its weights) and no formula of ours would
  follow llama.cpp's graph allocator across architectures. One probe on the CPU per shape, and one
  more with the chosen placement when layers go to a device, so the planned compute buffers are the
  ones llama.cpp will reserve.
- **Placement, as llama-server's ``--fit``.** llama.cpp offloads the last ``n_gpu_layers`` of the
  model's ``n_layer + 1`` layers (blocks, then the output layer), spread over its devices in order by
  ``tensor_split``. Where the user left ``num_gpu`` unset (Ollama's ``-1``), the planner offloads the
  most layers that fit the devices, filling them in llama.cpp's order, each keeping
  ``OLLAMA_GPU_OVERHEAD`` bytes free. An explicit ``num_gpu`` is obeyed (split in proportion to
  the devices' room, as llama.cpp's own default split).
- **When even everything cannot hold the asked context**, the parallel slots go down first, then the
  context (halved, never below 2048 tokens, or below what was asked if that is less), with one note; if
  nothing fits, the plan says what it needs and what there is, and the scheduler refuses the load
  before llama.cpp allocates anything.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from ..formatting import human_bytes
from .buffer_report import BufferReport, LlamaRefused
from .geometry import Geometry
from .jobs import LoadOptions

log = logging.getLogger("ollama_magic")

MIN_FIT_CTX = 2048  # the context is never lowered below this (Ollama's and llama-server's floor)
CPU = "CPU"
#: a probe: (load options) -> llama.cpp's no_alloc buffer report for them
Probe = Callable[[LoadOptions], BufferReport]


@dataclass(frozen=True)
class DeviceRoom:
    """Bytes one device can give this load now: a device's free memory less ``OLLAMA_GPU_OVERHEAD``,
    or, for the CPU, the RAM budget that loaded models leave."""

    name: str
    kind: str
    available: int


@dataclass(frozen=True)
class DeviceShare:
    """What one device holds of a load."""

    name: str
    kind: str
    layers: int
    weights: int
    kv_cache: int
    compute: int
    available: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute

    @property
    def fits(self) -> bool:
        return not self.total or self.total <= self.available


@dataclass(frozen=True)
class LoadPlan:
    """One load, placed and sized before it happens: what the scheduler makes room for and
    ``Engine.plan`` shows. ``options`` are the fitted load options the runner gets."""

    options: LoadOptions
    #: the CPU first, then each offload device in llama.cpp's order
    shares: tuple[DeviceShare, ...]
    projector: int = 0
    #: the layers llama.cpp counts for offloading (blocks + the output layer)
    layers: int = 0
    #: one line each for what the fit changed (slots, context), for every front end to show
    notes: tuple[str, ...] = ()
    #: whether the fit lowered the asked slots or context (the notes say how)
    lowered: bool = False

    @property
    def size(self) -> int:
        """Bytes the load takes on every device together, the projector included."""
        return sum(s.total for s in self.shares) + self.projector

    @property
    def size_vram(self) -> int:
        """Bytes on devices other than the CPU (Ollama's ``size_vram``)."""
        return sum(s.total for s in self.shares if s.name != CPU)

    @property
    def weights(self) -> int:
        return sum(s.weights for s in self.shares)

    @property
    def kv_cache(self) -> int:
        return sum(s.kv_cache for s in self.shares)

    @property
    def compute(self) -> int:
        return sum(s.compute for s in self.shares)

    @property
    def fits(self) -> bool:
        """Every device holds its share, the projector counted where it runs (a device given nothing
        fits whatever its room: ``OLLAMA_GPU_OVERHEAD`` may leave it less than none)."""
        return all(not (total := s.total + (self.projector if s.name == self.projector_device else 0))
                   or total <= s.available for s in self.shares)

    @property
    def gpu_layers(self) -> int:
        return sum(s.layers for s in self.shares if s.name != CPU)

    def by_device(self) -> dict[str, int]:
        """Bytes per device name (the projector counted on the device that runs it)."""
        sizes = {s.name: s.total for s in self.shares}
        sizes[self.projector_device] = sizes.get(self.projector_device, 0) + self.projector
        return sizes

    @property
    def projector_device(self) -> str:
        """Where libmtmd runs the projector: the first device that takes layers when it may leave the
        CPU (``LoadOptions.projector_offloaded``), else the CPU."""
        if not self.options.projector_offloaded:
            return CPU
        return next((s.name for s in self.shares[1:] if s.layers), CPU)

    def shortfall(self) -> str:
        """Why the plan does not fit, in Ollama's words, with the bytes per device."""
        over = [s for s in self.shares if not s.fits]
        needed = sum(s.total for s in over)
        available = sum(max(0, s.available) for s in over)
        where = ", ".join(f"{s.name} needs {human_bytes(s.total)} and has {human_bytes(max(0, s.available))}"
                          for s in over)
        return (f"model requires more system memory ({human_bytes(needed)}) than is available "
                f"({human_bytes(available)}): {where} at num_ctx {self.options.num_ctx} x "
                f"{self.options.num_parallel} slots; unload other models or lower num_ctx")


def _split_counts(layers: int, rooms: Sequence[DeviceRoom]) -> tuple[int, ...]:
    """``layers`` spread over ``rooms`` in proportion to their room (llama.cpp's default split, by
    free memory), as whole layers that add up."""
    room = [max(0, r.available) for r in rooms]
    total = sum(room)
    if not layers or not rooms:
        return (0,) * len(rooms)
    if not total:
        return (layers,) + (0,) * (len(rooms) - 1)
    counts = [layers * r // total for r in room]
    for i in sorted(range(len(rooms)), key=lambda i: -room[i])[: layers - sum(counts)]:
        counts[i] += 1
    return tuple(counts)


class _Costs:
    """Per-layer bytes of one shape: weights and KV of each of the ``n_layer + 1`` layers."""

    def __init__(self, geom: Geometry, options: LoadOptions) -> None:
        from .llama_context import settled_kv_type  # the type the runner will load with

        kv_type, _ = settled_kv_type(options.flash_attn, options.kv_cache_type)
        kv = geom.kv_cache_bytes(options.num_ctx * options.num_parallel, options.num_parallel, kv_type, kv_type)
        self.weights = [*geom.layer_weights, geom.output_weights + geom.tied_output]
        self.kv = [*kv, 0]
        self.geom = geom
        self.mmap = options.use_mmap

    def segment(self, start: int, count: int) -> tuple[int, int]:
        return sum(self.weights[start:start + count]), sum(self.kv[start:start + count])

    def cpu(self, offloaded: int) -> tuple[int, int]:
        """Weights and KV left on the CPU when the last ``offloaded`` layers go to devices. Memory-mapped
        weights count as llama.cpp maps them: the file range spanning what the CPU keeps."""
        kept = self.geom.layers - offloaded
        weights, kv = self.segment(0, kept)
        if kept == self.geom.layers:  # the output layer stays: a tied one shares the input's tensor
            weights -= self.geom.tied_output
        weights += self.geom.input_weights
        if self.mmap and self.geom.spans:
            weights = max(weights, self.geom.mapped_span([*range(kept), self.geom.block_count + 1]))
        return weights, kv


def _place(costs: _Costs, counts: Sequence[int], rooms: Sequence[DeviceRoom], cpu_room: DeviceRoom,
           compute: dict[str, int], projector: int = 0) -> tuple[DeviceShare, ...]:
    """The shares of a placement: ``counts[i]`` consecutive layers on ``rooms[i]``, ending at the
    output layer; the rest on the CPU."""
    offloaded = sum(counts)
    start = costs.geom.layers - offloaded
    weights, kv = costs.cpu(offloaded)
    shares = [DeviceShare(CPU, "CPU", costs.geom.layers - offloaded, weights, kv, compute.get(CPU, 0),
                          cpu_room.available)]
    for room, count in zip(rooms, counts):
        weights, kv = costs.segment(start, count)
        start += count
        shares.append(DeviceShare(room.name, room.kind, count, weights, kv,
                                  compute.get(room.name, 0) if count else 0, room.available))
    return tuple(shares)


def _most_layers(costs: _Costs, rooms: Sequence[DeviceRoom], compute: Sequence[int]) -> tuple[int, ...]:
    """The most of the model's last layers that fit the devices, filled in llama.cpp's order, each
    device also keeping room for its compute buffer (``compute[i]``)."""
    layers = costs.geom.layers
    for offloaded in range(layers, 0, -1):
        start, remaining, counts = layers - offloaded, offloaded, []
        for room, reserve in zip(rooms, compute):
            free, count = room.available - reserve, 0
            while count < remaining:
                weights, kv = costs.segment(start + count, 1)
                if weights + kv > free:
                    break
                free -= weights + kv
                count += 1
            counts.append(count)
            start += count
            remaining -= count
        if not remaining:
            return tuple(counts)
    return (0,) * len(rooms)


def _compute_by_device(report: BufferReport) -> dict[str, int]:
    return {name: b.compute + b.output for name, b in report.devices.items()}


def shapes(options: LoadOptions) -> list[tuple[int, int]]:
    """The (parallel, num_ctx) the fit tries, in order: as asked, then fewer slots, then a smaller
    context (halved, never below 2048 tokens, or below what was asked if that is less)."""
    tried = [(p, options.num_ctx) for p in range(options.num_parallel, 0, -1)]
    floor = min(options.num_ctx, MIN_FIT_CTX)
    ctx = options.num_ctx
    while ctx // 2 >= floor:
        ctx //= 2
        tried.append((1, ctx))
    if tried[-1][1] > floor:
        tried.append((1, floor))
    return tried


def plan(geom: Geometry, options: LoadOptions, rooms: Sequence[DeviceRoom], probe: Probe, *,
         explicit_gpu: bool, projector: int = 0) -> LoadPlan:
    """Place and size a load of ``options`` (checked by ``loading.load_options``) over ``rooms``:
    the CPU's room first, then the offload devices in llama.cpp's order."""
    cpu_room, devices = rooms[0], list(rooms[1:])
    candidates = [(options.num_parallel, options.num_ctx)] if options.embedding else shapes(options)
    best: LoadPlan | None = None
    for parallel, num_ctx in candidates:
        shaped = replace(options, num_parallel=parallel, num_ctx=num_ctx)
        candidate = _fit_shape(geom, shaped, cpu_room, devices, probe, explicit_gpu, projector)
        if best is None:
            best = candidate
        if candidate.fits:
            return replace(candidate, notes=candidate.notes + _notes(options, shaped, candidate),
                           lowered=(parallel, num_ctx) != (options.num_parallel, options.num_ctx))
    assert best is not None
    return best


def _fit_shape(geom: Geometry, options: LoadOptions, cpu_room: DeviceRoom, devices: list[DeviceRoom],
               probe: Probe, explicit_gpu: bool, projector: int) -> LoadPlan:
    notes: tuple[str, ...] = ()
    try:
        on_cpu = _compute_by_device(probe(replace(options, num_gpu=0, tensor_split=(), devices=())))
    except LlamaRefused:
        if options.kv_cache_type == "f16":
            raise
        # llama.cpp refuses this quantized cache for this model (e.g. a head size the quantized block
        # does not divide): f16, decided here so that the plan sizes what the runner will load
        notes = (f"K/V cache {options.kv_cache_type} is not possible for this model in llama.cpp: using f16",)
        options = replace(options, kv_cache_type="f16")
        on_cpu = _compute_by_device(probe(replace(options, num_gpu=0, tensor_split=(), devices=())))
    costs = _Costs(geom, options)
    if not devices or (explicit_gpu and options.num_gpu == 0):
        shares = _place(costs, (0,) * len(devices), devices, cpu_room, on_cpu)
        return LoadPlan(replace(options, num_gpu=0, tensor_split=(), devices=()), shares, projector, geom.layers,
                        notes)
    each = on_cpu.get(CPU, 0)  # a device's compute buffer, before the probe of the real placement
    if explicit_gpu:
        counts = _split_counts(min(max(options.num_gpu, 0), geom.layers) if options.num_gpu >= 0 else geom.layers,
                               devices)
    else:
        counts = _most_layers(costs, devices, [each] * len(devices))
    tried: set[tuple[int, ...]] = set()
    while True:  # the real placement's buffers, measured; placed again with them while a device overflows
        tried.add(counts)
        placed = replace(options, num_gpu=sum(counts), tensor_split=counts if sum(counts) else (),
                         devices=tuple(d.name for d in devices) if sum(counts) else ())
        compute = _compute_by_device(probe(placed)) if sum(counts) else dict(on_cpu)
        for room, count in zip(devices, counts):  # a device llama.cpp did not report (none such here):
            if count and room.name not in compute:  # the CPU's buffer stands in, as before the probe
                compute[room.name] = each
        shares = _place(costs, counts, devices, cpu_room, compute)
        plan_ = LoadPlan(placed, shares, projector, geom.layers, notes)
        if explicit_gpu or all(s.fits for s in shares[1:]) or not sum(counts):
            return plan_
        # the measured compute buffers (a device's can exceed the CPU's estimate) with fewer layers
        refit = _most_layers(costs, devices, [compute.get(d.name, each) for d in devices])
        if refit in tried or sum(refit) >= sum(counts):  # no progress: one layer fewer where it overflows
            over = max(i for i, s in enumerate(shares[1:]) if not s.fits)
            refit = tuple(c - 1 if i == over else c for i, c in enumerate(counts))
        counts = refit


def _notes(asked: LoadOptions, got: LoadOptions, plan_: LoadPlan) -> tuple[str, ...]:
    if (asked.num_parallel, asked.num_ctx) == (got.num_parallel, got.num_ctx):
        return ()
    changes = []
    if got.num_parallel != asked.num_parallel:
        changes.append(f"parallel slots {asked.num_parallel} -> {got.num_parallel}")
    if got.num_ctx != asked.num_ctx:
        changes.append(f"num_ctx {asked.num_ctx} -> {got.num_ctx}")
    room = sum(max(0, s.available) for s in plan_.shares)
    return (f"lowered {' and '.join(changes)} to fit the memory ({human_bytes(plan_.size)} of "
            f"{human_bytes(room)} available)",)


@functools.lru_cache(maxsize=256)
def _cached_probe(path: Path, mtime_ns: int, devices: tuple[str, ...], options: LoadOptions) -> BufferReport:
    from .llama_context import probe_load  # llama.cpp parameters are built where the runner builds them

    return probe_load(path, options)


def probe_for(path: Path, devices: tuple[str, ...] = ()) -> Probe:
    """The llama.cpp probe of one model file, remembered per load options and device set (a probe
    loads the model's metadata: tens of milliseconds on small models, more on large ones)."""
    mtime = path.stat().st_mtime_ns
    return lambda options: _cached_probe(path, mtime, devices, options)


__all__ = ["DeviceRoom", "DeviceShare", "LoadPlan", "MIN_FIT_CTX", "plan", "probe_for", "shapes"]
