"""Prometheus metrics of one Engine: fed by the engine itself, so a request counts the same whichever
front end made it (a magic, a widget or the HTTP server), and served by the server at ``/metrics``.

Each Engine has its own ``CollectorRegistry``, not prometheus_client's global one: two engines in one
process (a notebook beside a test, two servers) would otherwise register the same names twice, and one
engine's numbers would show in the other's scrape. What changes per request (tokens, latencies, HTTP
requests) is counted when it happens, a few dictionary updates per request; what is a state (requests
queued and running, busy slots, KV cache, loaded models and their bytes, the column cache's counters)
is read when a scrape asks for it (:class:`_LoadCollector`, :class:`_ColumnCacheCollector`), so no
thread polls anything. Names follow Prometheus' conventions, and llama-server's ``--metrics`` names
where one exists (``prompt_tokens_total``, ``tokens_predicted_total``, ``requests_processing``,
``requests_deferred``, ``kv_cache_tokens``), under the prefix ``ollama_magic_``.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("ollama_magic")

PREFIX = "ollama_magic_"
#: seconds to the first token: from a request reaching the engine (its model's load and its wait for a
#: slot included) to its first sampled token
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: seconds per generated token (Ollama's eval_duration / eval_count)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: seconds an HTTP request takes, its whole stream included (a generation may run for minutes)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
NS = 1e9


class EngineMetrics:
    """The collectors of one Engine and the registry they live in (``registry``; ``scrape()`` renders it).

    ``stats`` gives each loaded model's load now (``Engine.stats``); ``column_cache`` the column
    cache's file (read only, and only when it exists)."""

    def __init__(self, stats: Callable[[], Sequence[Any]], column_cache: Callable[[], Path] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.prompt_tokens = Counter(f"{PREFIX}prompt_tokens", "Prompt tokens read (a response's prompt_eval_count), "
                                     "embeddings included", ["model"], registry=r)
        self.tokens_predicted = Counter(f"{PREFIX}tokens_predicted", "Tokens generated (a response's eval_count)",
                                        ["model"], registry=r)
        self.time_to_first_token = Histogram(
            f"{PREFIX}time_to_first_token_seconds", "From a generation reaching the engine (load and queue "
            "included) to its first token: total_duration - eval_duration", ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.time_per_output_token = Histogram(
            f"{PREFIX}time_per_output_token_seconds", "Seconds per generated token of a request "
            "(eval_duration / eval_count)", ["model"], buckets=TPOT_BUCKETS, registry=r)
        self.http_requests = Counter(f"{PREFIX}http_requests", "HTTP requests answered, by route template and status",
                                     ["method", "route", "status"], registry=r)
        self.http_duration = Histogram(f"{PREFIX}http_request_duration_seconds", "HTTP request duration, its "
                                       "stream included", ["method", "route"], buckets=HTTP_BUCKETS, registry=r)
        r.register(_LoadCollector(stats))
        if column_cache is not None:
            r.register(_ColumnCacheCollector(column_cache))
        ProcessCollector(registry=r)  # the standard process_* metrics (from /proc: none where there is none)

    # ---- fed by the engine ----------------------------------------------------------------------

    def generated(self, model: str, prompt_eval_count: int, eval_count: int, eval_duration_ns: int,
                  total_duration_ns: int) -> None:
        """A generation ended with these counts and durations (its response's own fields)."""
        self.prompt_tokens.labels(model).inc(prompt_eval_count)
        self.tokens_predicted.labels(model).inc(eval_count)
        if eval_count > 0:  # without a token there is no first token and no time per token
            self.time_to_first_token.labels(model).observe(max(0, total_duration_ns - eval_duration_ns) / NS)
            self.time_per_output_token.labels(model).observe(eval_duration_ns / eval_count / NS)

    def prompt_read(self, model: str, count: int) -> None:
        """Tokens read without generating (embeddings, classification)."""
        self.prompt_tokens.labels(model).inc(count)

    # ---- fed by the HTTP server -----------------------------------------------------------------

    def http_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)

    def scrape(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def _by_model(stats: Iterable[Any], value: Callable[[Any], int]) -> dict[str, int]:
    """One value per model name: a model loaded twice (as generator and embedder, or a copy being
    replaced that requests still use) is one series, its entries summed."""
    totals: dict[str, int] = {}
    for s in stats:
        totals[s.name] = totals.get(s.name, 0) + value(s)
    return totals


def _gauge(name: str, doc: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=["model"])
    for model, value in sorted(values.items()):
        family.add_metric([model], value)
    return family


class _LoadCollector(Collector):
    """The engine's state at scrape time, from ``Engine.stats()`` (the scheduler's entries and their
    runners' counters: read, never waited on)."""

    def __init__(self, stats: Callable[[], Sequence[Any]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = list(self.stats())
        yield _gauge("requests_processing", "Requests holding a model and not queued (decoding, embedding, "
                     "tokenizing)", _by_model(stats, lambda s: max(0, s.active - s.waiting)))
        yield _gauge("requests_deferred", "Requests queued for a model: waiting for a free slot (generations) "
                     "or for the model's thread (embeddings)", _by_model(stats, lambda s: s.waiting))
        yield _gauge("busy_slots", "Slots decoding a sequence now", _by_model(stats, lambda s: s.busy_slots))
        yield _gauge("slots", "Sequences a model decodes together (OLLAMA_NUM_PARALLEL, as fitted)",
                     _by_model(stats, lambda s: s.slots))
        yield _gauge("kv_cache_tokens", "Tokens held in the KV cache, summed over the slots (running and kept "
                     "for prefix reuse); cells a shared prefix puts in several slots count once per slot",
                     _by_model(stats, lambda s: s.kv_tokens))
        yield _gauge("kv_cache_cells", "Cells of the KV cache (num_ctx x slots)", _by_model(stats, lambda s: s.kv_cells))
        in_service = [s for s in stats if not s.expiring]
        loaded = GaugeMetricFamily(PREFIX + "models_loaded", "Models loaded and in service (as /api/ps lists them)")
        loaded.add_metric([], len(in_service))
        yield loaded
        yield _gauge("model_size_bytes", "Bytes a loaded model holds, on every device (/api/ps size)",
                     _by_model(stats, lambda s: s.size))
        yield _gauge("model_vram_bytes", "Bytes a loaded model holds off the CPU (/api/ps size_vram)",
                     _by_model(stats, lambda s: s.size_vram))
        per_device = GaugeMetricFamily(PREFIX + "model_device_bytes", "Bytes a loaded model holds on each device "
                                       "(as llama.cpp reported allocating them)", labels=["model", "device"])
        by_device: dict[tuple[str, str], int] = {}
        for s in stats:
            for device, size in s.devices.items():
                by_device[(s.name, device)] = by_device.get((s.name, device), 0) + size
        for labels, size in sorted(by_device.items()):
            per_device.add_metric(list(labels), size)
        yield per_device


class _ColumnCacheCollector(Collector):
    """The column cache's persisted hit and miss counters per model, read from its file at scrape time
    (read only; nothing when the file does not exist, or cannot be read now)."""

    def __init__(self, path: Callable[[], Path]) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily(PREFIX + "column_cache_hits", "Column cache answers found (per model, all "
                                   "processes using the file, since it was cleared)", labels=["model"])
        misses = CounterMetricFamily(PREFIX + "column_cache_misses", "Column cache answers asked of a model",
                                     labels=["model"])
        for model, hit, miss in _cache_counters(self.path()):
            hits.add_metric([model], hit)
            misses.add_metric([model], miss)
        yield hits
        yield misses


def _cache_counters(path: Path) -> list[tuple[str, int, int]]:
    if not path.is_file():
        return []
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            return [(str(m), int(h), int(s)) for m, h, s in
                    db.execute("SELECT model, hits, misses FROM counters ORDER BY model")]
        finally:
            db.close()
    except sqlite3.Error as exc:  # being created, locked for long, or not a cache: no numbers this time
        log.debug("column cache counters not read from %s: %s", path, exc)
        return []


__all__ = ["EngineMetrics", "HTTP_BUCKETS", "PREFIX", "TPOT_BUCKETS", "TTFT_BUCKETS"]
