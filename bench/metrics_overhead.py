"""What the Prometheus metrics cost a request: ``--requests`` (default 200) ``/api/generate`` calls with
``num_predict`` 1 against one engine through two servers on it, one with ``OLLAMA_MAGIC_METRICS=1`` and
one without, in interleaved blocks so that load drift hits both alike; then the instrumentation alone
(what the engine and the middleware do per request, without a model) and one scrape. Reported with the
machine's load average, since on a shared machine the spread of a request dwarfs the difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests

from ollama_magic import Engine
from ollama_magic.defaults import register
from ollama_magic.server import BackgroundServer
from ollama_magic.store import ModelStore

MODEL = "gemma3:270m"
BODY = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 1, "temperature": 0}}


def server(engine: Engine, metrics: bool) -> BackgroundServer:
    if metrics:
        os.environ["OLLAMA_MAGIC_METRICS"] = "1"
    else:
        os.environ.pop("OLLAMA_MAGIC_METRICS", None)
    started = BackgroundServer(engine, port=0)
    started.start()
    return started


def summary(seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    deciles = statistics.quantiles(ms, n=10)
    return (f"n={len(ms)} median {statistics.median(ms):.1f} ms, mean {statistics.mean(ms):.1f}, "
            f"stdev {statistics.stdev(ms):.1f}, p10 {deciles[0]:.1f}, p90 {deciles[-1]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="requests per mode")
    parser.add_argument("--block", type=int, default=25, help="requests in a row before switching modes")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp()) / "models"
    store = ModelStore(root)
    register(store, MODEL)
    with Engine(store) as engine:
        servers = {"off": server(engine, False), "on": server(engine, True)}
        sessions = {name: requests.Session() for name in servers}
        for name, s in servers.items():  # the model loads, both connections open
            for _ in range(5):
                sessions[name].post(s.url + "/api/generate", json=BODY, timeout=120).raise_for_status()
        times: dict[str, list[float]] = {"off": [], "on": []}
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        for block in range(-(-args.requests // args.block)):
            for name in ("off", "on") if block % 2 == 0 else ("on", "off"):
                for _ in range(min(args.block, args.requests - len(times[name]))):
                    start = time.perf_counter()
                    sessions[name].post(servers[name].url + "/api/generate", json=BODY, timeout=120).raise_for_status()
                    times[name].append(time.perf_counter() - start)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        for name in ("off", "on"):
            print(f"metrics {name}: {summary(times[name])}")
        metrics = engine.metrics
        rounds = 10_000
        start = time.perf_counter()
        for _ in range(rounds):  # what one generation over HTTP adds: the engine's feed and the HTTP count
            metrics.generated(MODEL, 10, 1, 1000, 100_000)
            metrics.http_answered("POST", "/api/generate", 200, 0.01)
        print(f"instrumentation per request: {(time.perf_counter() - start) / rounds * 1e6:.1f} us")
        start = time.perf_counter()
        for _ in range(100):
            metrics.scrape()
        print(f"one scrape: {(time.perf_counter() - start) / 100 * 1e3:.2f} ms")
        for s in servers.values():
            s.stop()


if __name__ == "__main__":
    main()
