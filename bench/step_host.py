"""The host's share of a decoder step: per step, the wall time spent outside ``llama_decode``, with 1, 2,
4 and 8 sequences decoding together, on the embedded chat models.

On a GPU a small model's ``llama_decode`` takes a couple of milliseconds, so the Python around each
step (batch building, sampling, text assembly, handing tokens to the consumers) decides the speed
there. This measures it on whatever machine runs it: ``llama_cpp.llama_decode`` is wrapped (for this
process only, while the bench runs; the engine itself carries no timer) and each call's start and end
are recorded. The host time of a step is the gap between the end of one decode and the start of the
next, counted only in steady state: both decodes fed exactly one token per sequence, for N sequences.
Everything the engine does between two decodes is in it: the runner's inbox check, the step's batch
building and bookkeeping, the sampler chains (llama.cpp's C sampling included), text assembly, stop
strings, and the puts to each job's output, with consumer threads (as the HTTP server's) reading the
streams beside it.

Greedy, no stop strings, streaming through ``Engine.generate``; medians and p90 over the steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import llama_cpp

from _models import engine_with
from ollama_magic.engine.runner import physical_cores

MODELS = ["smollm2:135m", "gemma3:270m"]
PROMPT = "Request {i}. Write a long, detailed story about a small robot who explores an old lighthouse by the sea."


class DecodeClock:
    """Wraps ``llama_cpp.llama_decode`` (looked up at call time by the engine's context) while in use."""

    def __init__(self) -> None:
        self.events: list[tuple[float, float, int]] = []  # (start, end, tokens in the batch)
        self._original = llama_cpp.llama_decode

    def __enter__(self) -> "DecodeClock":
        original, events, clock = self._original, self.events, time.perf_counter

        def timed(ctx, batch):  # type: ignore[no-untyped-def]
            start = clock()
            code = original(ctx, batch)
            events.append((start, clock(), batch.n_tokens))
            return code

        llama_cpp.llama_decode = timed
        return self

    def __exit__(self, *exc: object) -> None:
        llama_cpp.llama_decode = self._original


def steady_steps(events: list[tuple[float, float, int]], n: int, skip: int = 5) -> tuple[list[float], list[float]]:
    """-> (host seconds, decode seconds) of each step whose decode and the one before it fed ``n`` tokens."""
    host, decode = [], []
    for (_, prev_end, prev_n), (start, end, count) in zip(events, events[1:]):
        if prev_n == n and count == n:
            host.append(start - prev_end)
            decode.append(end - start)
    return host[skip:], decode[skip:]


def run_streams(engine, model: str, n: int, tokens: int, offset: int, options: dict) -> None:  # type: ignore[no-untyped-def]
    def client(i: int) -> None:
        for _ in engine.generate(model, PROMPT.format(i=offset + i), stream=True,
                                 options={**options, "num_predict": tokens}):
            pass

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument("--tokens", type=int, default=300, help="tokens per stream (steps per count, about)")
    parser.add_argument("--threads", type=int, default=physical_cores())
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    os.environ["OLLAMA_NUM_PARALLEL"] = str(max(counts))
    options = {"temperature": 0, "stop": [], "num_ctx": 1024, "num_thread": args.threads}
    print(f"{args.threads} threads, CPU, greedy, {args.tokens} tokens per stream, OLLAMA_NUM_PARALLEL={max(counts)}; "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    print(f"{'model':<15}{'seqs':>5}{'steps':>7}{'host ms p50':>13}{'host ms p90':>13}{'decode ms p50':>15}"
          f"{'host share':>12}{'load':>7}", flush=True)
    for model in args.models.split(","):
        with engine_with(model) as engine:
            engine.generate(model, "warm up", options={**options, "num_predict": 4})
            offset = 0
            for n in counts:
                with DecodeClock() as clock:
                    run_streams(engine, model, n, args.tokens, offset, options)
                offset += n
                report(model, n, *steady_steps(clock.events, n))


def report(model: str, n: int, host: list[float], decode: list[float]) -> None:
    if not host:
        print(f"{model:<15}{n:>5}{0:>7}  (no steady-state steps)", flush=True)
        return
    h, d = statistics.median(host), statistics.median(decode)
    print(f"{model:<15}{n:>5}{len(host):>7}{h * 1e3:>13.3f}{percentile(host, 0.9) * 1e3:>13.3f}{d * 1e3:>15.2f}"
          f"{h / (h + d):>12.1%}{os.getloadavg()[0]:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
