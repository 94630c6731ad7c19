"""Which models are loaded, for how long, and which one goes when room is needed.

Ollama's rules: ``keep_alive`` per request (default 5m or ``OLLAMA_KEEP_ALIVE``; 0 unloads after the
request, negative keeps the model forever); at most ``OLLAMA_MAX_LOADED_MODELS`` (default 3) models
and the memory of every device; when a load would exceed either, the least recently used idle model
is unloaded. Memory is budgeted per device: the RAM budget (90% of the machine's) less what loaded
models hold on the CPU, and each offload device's free memory as llama.cpp reads it now. A load that
would fit better with idle models gone (more layers on devices, or the asked context rather than a
lowered one) unloads them, least recently used first, until it fits as well as it can; one that cannot
fit at all is refused with the bytes it needs and has, before llama.cpp allocates anything. Loads
are placed one at a time (Ollama's scheduler also places one pending load at a time), so two loads
never count the same free memory.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import psutil

from .. import envconfig
from ..durations import MAX_KEEP_ALIVE, parse_duration  # noqa: F401 - MAX_KEEP_ALIVE: re-exported
from ..errors import EngineError
from .planner import CPU, DeviceRoom, LoadPlan
from .runner import LoadOptions, Runner

log = logging.getLogger("ollama_magic")

FOREVER = None  # expires_at of a model kept with a negative keep_alive
DEFAULT_KEEP_ALIVE = envconfig.keep_alive.default


def parse_keep_alive(value: Any, default: float | None = None) -> float | None:
    """Seconds to keep a model after a request; None means forever. Accepts Go durations or numbers."""
    if value is None or value == "":
        return default if default is not None else env_keep_alive()
    return parse_duration(value)


def env_keep_alive() -> float | None:
    return envconfig.keep_alive()


def memory_budget() -> int:
    """Bytes of RAM models may use: 90% of what the machine has (no GPU accounting here); psutil
    reads it on every platform (``os.sysconf`` does not exist on Windows)."""
    return int(psutil.virtual_memory().total * 0.9)


_WATCHED: "weakref.WeakSet[Scheduler]" = weakref.WeakSet()
_watch_lock = threading.Lock()
_watching = False


def _watch_rpc_workers(scheduler: "Scheduler") -> None:
    """Before a load may use an RPC worker: keep the process alive if a worker dies mid-request
    (``devices.on_rpc_abort``) and abandon the models that used it, in every scheduler."""
    global _watching
    with _watch_lock:
        if not _watching:
            from .devices import on_rpc_abort

            on_rpc_abort(lambda message, dead: [s.abandon_workers(dead) for s in list(_WATCHED)])
            _watching = True
        _WATCHED.add(scheduler)


def _offload_devices() -> list[Any]:
    from .devices import offload_devices  # ctypes on ggml's registry: loaded on the first placement

    return offload_devices()


def _measured_shares(runner: Any, plan: LoadPlan | None, size: int) -> dict[str, int]:
    """Bytes per device a loaded model holds: llama.cpp's report of its load where there is one,
    else the plan's (tests' fakes load nothing), with the projector on the device that runs it."""
    allocated = getattr(runner, "allocated", None)
    if allocated is not None and allocated.total:
        shares = {name: b.total for name, b in allocated.devices.items()}
        if plan is not None and plan.projector:
            shares[plan.projector_device] = shares.get(plan.projector_device, 0) + plan.projector
        return shares
    return plan.by_device() if plan is not None else {CPU: size}


class LoadedKey(NamedTuple):
    """What the scheduler keeps one runner per: a model, as a generator or as an embedder. A tuple,
    so ``(name, embedding)`` and ``key[1]`` keep working."""

    name: str
    embedding: bool


@dataclass(frozen=True)
class LoadedStats:
    """One loaded model's load, for ``Engine.stats()``: what tests and dashboards may read instead
    of the scheduler's and runner's internals."""

    name: str
    embedding: bool
    #: requests holding the model now
    active: int
    #: jobs submitted and not yet in a slot (OLLAMA_MAX_QUEUE counts these)
    waiting: int
    #: tokens generated since the load
    tokens_decoded: int
    #: the most sequences decoded in one step since the load
    peak_active: int
    #: unloaded or replaced while still in use: freed when ``active`` reaches 0
    expiring: bool
    #: slots decoding a sequence now, and slots in all (0 for an embedding model)
    busy_slots: int = 0
    slots: int = 0
    #: tokens in the KV cache summed over slots (``Decoder.occupancy``), and its cells
    kv_tokens: int = 0
    kv_cells: int = 0
    #: bytes held in all, off the CPU, and per device (``ps``' size, size_vram and devices)
    size: int = 0
    size_vram: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Loaded:
    key: LoadedKey
    name: str
    digest: str
    runner: Runner
    size: int
    size_vram: int
    details: Any
    context_length: int
    gpu_layers: int = 0  # of ``layers`` (blocks + output), as llama.cpp offloads them
    layers: int = 0
    #: the load options requests asked for (the runner's own are the fitted ones): what a later
    #: request must match to be served by this entry
    requested: LoadOptions | None = None
    #: bytes held per device name (what llama.cpp reported allocating, or the plan's)
    shares: dict[str, int] = field(default_factory=dict)
    #: what the planner changed to fit the load (one line each), for the front ends
    notes: tuple[str, ...] = ()
    #: the placement it was loaded with (None for a load without a planner)
    plan: LoadPlan | None = None
    last_used: float = field(default_factory=time.monotonic)
    expires_at: datetime | None = None
    active: int = 0
    #: unloaded, replaced or evicted while requests still used it: freed when ``active`` reaches 0
    expiring: bool = False


_CLOSED = "the engine is closed: it unloaded its models and loads no more (make a new Engine)"


@dataclass
class _KeyLock:
    """Serialises loads of one model; ``users`` counts the acquires holding or waiting for it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


def _serves(entry: Loaded, load: LoadOptions, model_path: Path) -> bool:
    """Whether ``entry``'s runner was loaded as a request with ``load`` needs (else: a reload)."""
    asked = entry.requested if entry.requested is not None else entry.runner.load_options
    return asked == load and entry.runner.model_path == model_path


def _share(entry: Loaded, device: str) -> int:
    return entry.shares.get(device, 0) if entry.shares else (entry.size if device == CPU else 0)


def _may_improve(plan: LoadPlan) -> bool:
    """Whether freeing memory could place ``plan`` better: it does not fit, the fit lowered its
    slots or context, or devices exist and some layers stayed on the CPU."""
    return not plan.fits or plan.lowered or (len(plan.shares) > 1 and plan.gpu_layers < plan.layers)


def _better(ideal: LoadPlan, plan: LoadPlan) -> bool:
    """Whether a load would be placed better with idle models gone: it fits where it did not, or
    keeps more layers on devices, or keeps more of the asked slots and context."""
    if ideal.fits != plan.fits:
        return ideal.fits
    return ((ideal.gpu_layers, ideal.options.num_ctx, ideal.options.num_parallel)
            > (plan.gpu_layers, plan.options.num_ctx, plan.options.num_parallel))


def _stats_of(e: Loaded) -> LoadedStats:
    decoder = e.runner.decoder
    busy, slots, kv_tokens, kv_cells = decoder.occupancy() if decoder is not None else (0, 0, 0, 0)
    return LoadedStats(name=e.name, embedding=bool(e.key[1]), active=e.active, waiting=e.runner.waiting,
                       tokens_decoded=e.runner.tokens_decoded, expiring=e.expiring,
                       peak_active=decoder.peak_active if decoder is not None else 0, busy_slots=busy, slots=slots,
                       kv_tokens=kv_tokens, kv_cells=kv_cells, size=e.size, size_vram=e.size_vram,
                       devices=dict(e.shares) if e.shares else {CPU: e.size})


class Scheduler:
    """Ollama's ``sched.go`` rules over :class:`Runner` actors.

    ``runner_factory`` builds a runner (``Runner(model_path, load, name=...)``); tests pass a fake
    that loads nothing, as Ollama's ``sched_test.go`` replaces ``newServerFn``."""

    def __init__(self, max_loaded: int | None = None, budget: int | None = None, *,
                 runner_factory: Callable[..., Runner] = Runner,
                 devices: Callable[[], list[Any]] | None = None) -> None:
        self._runner_factory = runner_factory
        #: the offload devices, with their free memory read now (``devices.offload_devices``)
        self._devices = devices if devices is not None else _offload_devices
        #: held while a load is placed (planned, room made): one at a time, and each placed load's bytes
        #: stay reserved in ``_pending`` until it is loaded, so two loads never count the same free memory
        self._placing = threading.Lock()
        self._pending: dict[int, dict[str, int]] = {}
        #: each offload device's free memory when none of our models was on it (see ``_rooms``)
        self._idle_free: dict[str, int] = {}
        self._closing = 0  # runners being closed now (their memory not yet returned)
        self.max_loaded = max_loaded or envconfig.max_loaded_models()
        self.budget = budget or memory_budget()
        self._loaded: dict[LoadedKey, Loaded] = {}
        #: taken out of service while requests still use them: their memory is still in use
        self._expiring: dict[int, Loaded] = {}  # by id(): entries compare by value
        #: one per model being acquired, dropped when no acquire waits on it (else one per name, forever)
        self._key_locks: dict[LoadedKey, _KeyLock] = {}
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._reaper = threading.Thread(target=self._reap, name="ollama-magic-keepalive", daemon=True)
        self._stopped = False
        self._reaper.start()

    # ---- acquiring ---------------------------------------------------------------------------

    def acquire(
        self,
        key: LoadedKey,
        load: LoadOptions,
        model_path: Path,
        describe: Callable[[Runner], dict[str, Any]],
        *,
        size: int | None = None,
        planner: Callable[[list[DeviceRoom]], LoadPlan] | None = None,
    ) -> tuple[Loaded, int]:
        """The loaded model for ``key`` (loading it, or reloading on new load options); marks it busy.

        ``planner`` places the load over the rooms the devices have now (``loading.plan_load``): the
        runner gets the plan's fitted options. Without one (tests' fakes), the load takes ``size`` bytes
        of RAM (default: the weights' file) and ``load`` as it is.
        Returns (entry, load_duration_ns): the load time is 0 when the model was already loaded.
        """
        key = LoadedKey(*key)
        with self._lock:
            self._check_running_locked()
            key_lock = self._key_locks.setdefault(key, _KeyLock())
            key_lock.users += 1
        try:
            with key_lock.lock:  # one load per model at a time; other models keep serving meanwhile
                return self._acquire_locked_key(key, load, model_path, describe, size, planner)
        finally:
            with self._lock:
                key_lock.users -= 1
                if key_lock.users == 0:  # the last one waiting for this model: forget its lock
                    del self._key_locks[key]

    def _acquire_locked_key(self, key: LoadedKey, load: LoadOptions, model_path: Path,
                            describe: Callable[[Runner], dict[str, Any]], size: int | None,
                            planner: Callable[[list[DeviceRoom]], LoadPlan] | None) -> tuple[Loaded, int]:
        """The body of :meth:`acquire`, under the model's key lock."""
        to_free: list[Loaded] = []
        with self._lock:
            entry = self._loaded.get(key)
            if entry is not None and _serves(entry, load, model_path):
                entry.active += 1
                entry.last_used = time.monotonic()
                return entry, 0
            reused = self._expiring_match_locked(key, load, model_path)
            if entry is not None:
                to_free += self._expire_locked(entry)  # new load options: the old one goes when idle
            if reused is not None:
                self._revive_locked(reused)
        self._free(to_free)
        if reused is not None:
            return reused, 0
        with self._placing:
            if planner is None and size is None:
                size = model_path.stat().st_size
            plan = self._make_room(size or 0, planner)
            reservation = plan.by_device() if plan is not None else {CPU: size or 0}
            with self._lock:
                self._pending[id(reservation)] = reservation
        made: Loaded | None = None
        try:
            fitted = plan.options if plan is not None else load
            runner = self._runner_factory(model_path, fitted, name=key[0])  # slow: outside the scheduler lock
            try:
                made = Loaded(key=key, runner=runner, active=1, requested=load, **describe(runner))
            except BaseException:  # e.g. a blob pruned meanwhile: no runner is left without an owner
                runner.close()
                raise
            made.shares = _measured_shares(runner, plan, made.size)
            made.plan = plan
            made.notes = (plan.notes if plan is not None else ()) + tuple(getattr(runner, "load_notes", ()))
            # Until its first request ends (which sets the real expiry), ps shows the default keep_alive
            # from now, as Ollama does for a freshly loaded model, not "forever".
            default = env_keep_alive()
            made.expires_at = FOREVER if default is None else datetime.now(timezone.utc) + timedelta(seconds=default)
        finally:
            with self._lock:
                del self._pending[id(reservation)]
                stopped = self._stopped
                if not stopped and made is not None:
                    self._loaded[key] = made
        if stopped:  # shut down while it loaded: nobody would ever reap it
            runner.close()
            raise EngineError(_CLOSED)
        for note in made.notes:
            log.warning("%s: %s", key[0], note)
        return made, runner.load_duration

    def _make_room(self, size: int, planner: Callable[[list[DeviceRoom]], LoadPlan] | None) -> LoadPlan | None:
        """Unload least recently used idle models while the load would be placed better without
        them (or the count limit is reached); the plan to load with, or an EngineError when the load
        cannot fit at all. Called with ``_placing`` held; the scheduler lock is taken only to read and
        to unload, and an unload frees the runner before the devices are read again."""
        if planner is None:
            with self._lock:
                self._check_running_locked()
                victims = self._make_room_locked(size)
            self._free(victims)
            return None
        while True:
            with self._lock:
                self._check_running_locked()
                entries = [*self._loaded.values(), *self._expiring.values()]
                idle = sorted((e for e in self._loaded.values() if e.active == 0), key=lambda e: e.last_used)
                count = len(self._loaded)
            plan = planner(self._rooms(entries))
            if self._should_evict(planner, plan, entries, [], idle, count):
                with self._lock:
                    victim = idle[0]
                    still_idle = victim.active == 0 and self._loaded.get(victim.key) is victim
                    evicted = self._expire_locked(victim) if still_idle else []
                if still_idle:
                    log.info("unloading %s to make room", victim.name)
                self._free(evicted)
                continue  # read the devices again (or the victim got busy meanwhile: look again)
            if count >= self.max_loaded:
                log.warning("no idle model to unload: loading beyond the limit")
            if not plan.fits:
                raise EngineError(plan.shortfall())
            return plan

    def _should_evict(self, planner: Callable[[list[DeviceRoom]], LoadPlan], plan: LoadPlan,
                      entries: list[Loaded], gone: list[Loaded], idle: list[Loaded], count: int) -> bool:
        """The eviction rule, for loads and previews alike: unload the least recently used idle model
        (``idle[0]``) when the count limit is reached, or when the load would be placed better with
        every idle model gone (``gone``: those already counted as unloaded)."""
        if not idle:
            return False
        if count >= self.max_loaded:
            return True
        return _may_improve(plan) and _better(planner(self._rooms(entries, gone + idle)), plan)

    def preview(self, planner: Callable[[list[DeviceRoom]], LoadPlan]) -> tuple[LoadPlan, list[str]]:
        """The plan a load would get now and the models it would unload first, unloading nothing
        (``Engine.plan``): the same rule as a load, run on what the devices have now."""
        with self._lock:
            entries = [*self._loaded.values(), *self._expiring.values()]
            idle = sorted((e for e in self._loaded.values() if e.active == 0), key=lambda e: e.last_used)
            count = len(self._loaded)
        gone: list[Loaded] = []
        plan = planner(self._rooms(entries))
        while self._should_evict(planner, plan, entries, gone, idle, count):
            gone.append(idle.pop(0))
            count -= 1
            plan = planner(self._rooms(entries, gone))
        return plan, [e.name for e in gone]

    def abandon_workers(self, endpoints: list[str]) -> list[str]:
        """RPC workers died under the models using them (``devices.on_rpc_abort``): those models'
        requests fail with one error each and the models are forgotten (their threads are stuck in
        llama.cpp for good); every other model keeps serving. Returns the models abandoned."""
        gone = [f"[{endpoint}]" for endpoint in endpoints]
        with self._lock:
            hit = [e for e in [*self._loaded.values(), *self._expiring.values()]
                   if any(tag in name for name in e.shares for tag in gone)]
            for entry in hit:
                if self._loaded.get(entry.key) is entry:
                    del self._loaded[entry.key]
                self._expiring.pop(id(entry), None)
                entry.expiring = True
            self._wake.notify_all()
        for entry in hit:
            where = ", ".join(endpoints) or "an RPC worker"
            log.error("RPC worker %s stopped answering: %s is unloaded (its memory in this process stays held "
                      "until the process ends)", where, entry.name)
            entry.runner.abandon(EngineError(f"RPC worker {where} stopped answering while model {entry.name} "
                                             "used it: the model is unloaded; load it again to place it on the "
                                             "devices that answer"))
        return [e.name for e in hit]

    def _rooms(self, entries: list[Loaded], returned: list[Loaded] | None = None) -> list[DeviceRoom]:
        """What each device can give a load now, with the bytes of ``returned`` models counted as free.

        The CPU: the RAM budget less what loaded models (and loads placed, not yet made) hold. An offload
        device: its free memory as llama.cpp reads it now, but never more than its free memory when none
        of our models was on it less what ours hold there: a device's own reading lags what was reserved
        and not yet touched (an RPC worker computing on a CPU reports the machine's free RAM, which a
        KV cache allocated and not yet written does not lower), and another process's use shows only
        in the reading. Each keeps ``OLLAMA_GPU_OVERHEAD`` free."""
        returned = returned or []
        with self._lock:  # loads placed and not yet made: their bytes are not free any more
            pending = list(self._pending.values())

        def held(device: str, of: list[Loaded]) -> int:
            return sum(_share(e, device) for e in of)

        def reserved(device: str) -> int:
            return sum(p.get(device, 0) for p in pending)

        rooms = [DeviceRoom(CPU, CPU, self.budget - held(CPU, entries) + held(CPU, returned) - reserved(CPU))]
        overhead = envconfig.gpu_overhead()
        for device in self._devices():
            if not getattr(device, "reachable", True):  # a worker that does not answer offers nothing
                continue
            ours = held(device.name, entries) + reserved(device.name)
            if not ours and not self._closing:  # none of ours there, none being freed
                self._idle_free[device.name] = device.free
            free = min(device.free, self._idle_free.get(device.name, device.free) - ours)
            rooms.append(DeviceRoom(device.name, device.kind, free - overhead + held(device.name, returned)))
            if device.kind == "RPC":
                _watch_rpc_workers(self)
        return rooms

    def _check_running_locked(self) -> None:
        if self._stopped:
            raise EngineError(_CLOSED)

    def _expiring_match_locked(self, key: LoadedKey, load: LoadOptions, model_path: Path) -> Loaded | None:
        """An entry taken out of service while requests still use it, with these load options: Ollama's
        ``useLoadedRunner`` serves a new request from it rather than loading a second copy."""
        return next((e for e in self._expiring.values() if e.key == key and _serves(e, load, model_path)), None)

    def _revive_locked(self, entry: Loaded) -> None:
        """Put an expiring entry back in service for one more request (its unload is called off)."""
        del self._expiring[id(entry)]
        entry.expiring = False
        entry.active += 1
        entry.last_used = time.monotonic()
        self._loaded[entry.key] = entry

    def release(self, entry: Loaded, keep_alive: float | None) -> None:
        """A request finished: start the keep_alive clock (0 unloads now)."""
        to_free: list[Loaded] = []
        with self._lock:
            entry.active = max(0, entry.active - 1)
            entry.last_used = time.monotonic()
            if keep_alive is None:
                entry.expires_at = FOREVER
            else:
                entry.expires_at = datetime.now(timezone.utc) + timedelta(seconds=keep_alive)
            if keep_alive == 0 or entry.expiring:
                to_free = self._expire_locked(entry)
            self._wake.notify_all()
        self._free(to_free)

    def _make_room_locked(self, needed: int) -> list[Loaded]:
        """Evict least recently used idle models until ``needed`` bytes fit; returns them, to be freed
        by the caller once the lock is released."""
        evicted: list[Loaded] = []
        while self._loaded:
            used = self._used_locked() + sum(p.get(CPU, 0) for p in self._pending.values())
            if len(self._loaded) < self.max_loaded and used + needed <= self.budget:
                break
            idle = [e for e in self._loaded.values() if e.active == 0]
            if not idle:
                log.warning("no idle model to unload: loading beyond the limit")
                break
            victim = min(idle, key=lambda e: e.last_used)
            log.info("unloading %s to make room", victim.name)
            evicted += self._expire_locked(victim)
        return evicted

    def _used_locked(self) -> int:
        """RAM held by models: those in service and those expiring that requests still hold (their
        weights and KV cache stay in memory until the last of those requests ends)."""
        return sum(_share(e, CPU) for e in [*self._loaded.values(), *self._expiring.values()])

    # ---- unloading ---------------------------------------------------------------------------

    def _expire_locked(self, entry: Loaded) -> list[Loaded]:
        """Take ``entry`` out of service; it is returned for freeing only when no request uses it, else
        its last ``release`` frees it (Ollama's expire-at-refcount-0). Until then a new request with the
        same load options is served by it again (:meth:`_revive_locked`), and its memory counts."""
        if self._loaded.get(entry.key) is entry:
            del self._loaded[entry.key]
        entry.expiring = True
        if entry.active > 0:
            self._expiring[id(entry)] = entry
            return []
        self._expiring.pop(id(entry), None)
        return [entry]

    def _free(self, entries: list[Loaded]) -> None:
        """Close runners, never with the scheduler lock held (a close waits for the owner thread).
        Until they are closed their memory is still held: ``_rooms`` takes no idle reading meanwhile."""
        if not entries:
            return
        with self._lock:
            self._closing += len(entries)
        try:
            for entry in entries:
                entry.runner.close()
        finally:
            with self._lock:
                self._closing -= len(entries)

    def unload(self, name: str) -> bool:
        """Unload every instance of ``name`` (once idle); False if it was not loaded."""
        with self._lock:
            entries = [e for e in self._loaded.values() if e.name == name]
            to_free = [f for e in entries for f in self._expire_locked(e)]
        self._free(to_free)
        return bool(entries)

    def unload_all(self) -> None:
        with self._lock:
            to_free = [f for e in list(self._loaded.values()) for f in self._expire_locked(e)]
        self._free(to_free)

    def shutdown(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.notify_all()
        self.unload_all()

    def _reap(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
                now = datetime.now(timezone.utc)
                to_free: list[Loaded] = []
                for entry in list(self._loaded.values()):
                    if entry.active == 0 and entry.expires_at is not None and entry.expires_at <= now:
                        log.info("keep_alive expired: unloading %s", entry.name)
                        to_free += self._expire_locked(entry)
                if not to_free:
                    upcoming = [e.expires_at for e in self._loaded.values() if e.expires_at is not None and e.active == 0]
                    timeout = min(((t - now).total_seconds() for t in upcoming), default=60.0)
                    self._wake.wait(timeout=max(0.05, min(timeout, 60.0)))
            self._free(to_free)

    # ---- reporting ---------------------------------------------------------------------------

    def stats(self) -> list[LoadedStats]:
        """Every loaded model's load, those in service first, then those expiring."""
        with self._lock:
            entries = [*self._loaded.values(), *self._expiring.values()]
        return [_stats_of(e) for e in entries]

    def loaded(self) -> list[Loaded]:
        with self._lock:
            return list(self._loaded.values())

    def __iter__(self) -> Iterator[Loaded]:
        return iter(self.loaded())
