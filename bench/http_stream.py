"""Streaming tokens/s over HTTP (the ``ollama`` client, POST /api/generate, NDJSON) vs the same request in-kernel.

Both sides share one Engine and one loaded model; the rate is measured where the user sees it (the
client), from the first streamed token to the last, so HTTP framing, JSON encoding, the event loop
and the thread hand-offs are all inside the HTTP figure (target: ratio >= 0.95). Runs alternate and
the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Iterable

import ollama

from ollama_magic import Engine
from ollama_magic.engine.runner import physical_cores
from ollama_magic.server import BackgroundServer

from _models import engine_with

MODEL = "gemma3:270m"
PROMPT = "Write a long, detailed essay about the history of the printing press."


def client_rate(chunks: Iterable[dict]) -> tuple[float, int]:
    """Tokens/s between the first and the last token the client received, and the token count."""
    first = last = 0.0
    count = 0
    for chunk in chunks:
        if chunk.get("done"):
            count = chunk["eval_count"]
            break
        last = time.perf_counter()
        first = first or last
    return (count - 1) / (last - first), count


def http_chunks(url: str, body: dict) -> Iterable[dict]:
    """The official ``ollama`` client streaming from our server, as an application would."""
    client = ollama.Client(host=url)
    for chunk in client.generate(body["model"], body["prompt"], options=body["options"], stream=True):
        yield {"done": chunk.done, "eval_count": chunk.eval_count}


def kernel_chunks(engine: Engine, body: dict) -> Iterable[dict]:
    for chunk in engine.generate(body["model"], body["prompt"], options=body["options"], stream=True):
        yield {"done": chunk.done, "eval_count": chunk.eval_count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256, help="tokens to decode per run")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    body = {"model": MODEL, "prompt": PROMPT, "options": {"temperature": 0, "num_predict": args.tokens, "stop": []}}

    with engine_with(MODEL) as engine:
        with BackgroundServer(engine, port=0) as server:
            engine.generate(MODEL, "warm up", options={"num_predict": 4})
            over_http, in_kernel = [], []
            for _ in range(args.runs):
                rate, n_http = client_rate(http_chunks(server.url, body))
                over_http.append(rate)
                rate, n_kernel = client_rate(kernel_chunks(engine, body))
                in_kernel.append(rate)
    http_rate, kernel_rate = statistics.median(over_http), statistics.median(in_kernel)
    print(f"model {MODEL}, {physical_cores()} threads, CPU, greedy, {n_http}/{n_kernel} tokens; "
          f"median of {args.runs} alternating runs")
    print(f"{'benchmark':<44}{'ours':>12}{'anchor':>12}{'ratio':>9}  target")
    print(f"{'HTTP stream tokens/s (ollama client vs kernel)':<44}{http_rate:>12.1f}{kernel_rate:>12.1f}"
          f"{http_rate / kernel_rate:>9.3f}  >= 0.95")


if __name__ == "__main__":
    main()
