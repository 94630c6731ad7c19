"""Concurrent chat streams through the HTTP server: aggregate tokens/s and time to first token
(p50/p95) with 1, 2, 4 and 8 clients at once, each streaming one chat with the official ``ollama``
client. The anchor for N clients is the 1-client aggregate rate (ratio = speed-up from concurrency).

Target (next step): 4 streams >= 2x one stream. Today one model generates for one request at a time
(llama.cpp context per model, requests queued), so the aggregate stays near one stream's rate.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import ollama

from ollama_magic.server import BackgroundServer

from _models import engine_with

MODEL = "gemma3:270m"


def one_stream(url: str, index: int, tokens: int, results: list[tuple[float, int, float]], start: threading.Event) -> None:
    client = ollama.Client(host=url)
    start.wait()
    begin = time.perf_counter()
    first = None
    count = 0
    for chunk in client.chat(MODEL, [{"role": "user", "content": f"Tell me a story about robot number {index}."}],
                             stream=True, options={"num_predict": tokens, "temperature": 0, "stop": []}):
        if first is None:
            first = time.perf_counter() - begin
        if chunk.done:
            count = chunk.eval_count or 0
    results.append((first or 0.0, count, time.perf_counter() - begin))


def run(url: str, clients: int, tokens: int) -> tuple[float, float, float]:
    results: list[tuple[float, int, float]] = []
    start = threading.Event()
    threads = [threading.Thread(target=one_stream, args=(url, i, tokens, results, start)) for i in range(clients)]
    for t in threads:
        t.start()
    begin = time.perf_counter()
    start.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    ttfts = sorted(r[0] for r in results)
    p95 = ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]
    return sum(r[1] for r in results) / wall, statistics.median(ttfts), p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    args = parser.parse_args()
    with engine_with(MODEL) as engine:
        with BackgroundServer(engine, port=0) as server:
            engine.generate(MODEL, "warm up", options={"num_predict": 2})
            rows = [(n, *run(server.url, n, args.tokens)) for n in (1, 2, 4, 8)]
    single = rows[0][1]
    print(f"model {MODEL}, {args.tokens} tokens per stream, HTTP + ollama client, CPU")
    print(f"{'benchmark':<44}{'ours':>12}{'anchor':>12}{'ratio':>9}  target")
    for n, rate, p50, p95 in rows:
        target = ">= 2.0 (next step)" if n == 4 else ""
        print(f"{f'{n} streams: aggregate tokens/s vs 1 stream':<44}{rate:>12.1f}{single:>12.1f}{rate / single:>9.2f}  {target}")
        print(f"{f'{n} streams: TTFT p50 / p95 (s)':<44}{p50:>12.2f}{p95:>12.2f}")


if __name__ == "__main__":
    main()
