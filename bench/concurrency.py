"""Concurrent streams on one model: aggregate decode tokens/s and time to first token (p50/p95) with
1, 2, 4 and 8 clients at once, ours (continuous batching, OLLAMA_NUM_PARALLEL slots) against llama.cpp's
own ``llama-server --parallel 4`` on the same GGUF, options and thread count, in the same run.

Both get the same raw prompt (a unique first line per request, so no prompt is cached), greedy, 128
tokens, and are read as streams over HTTP with httpx: ours through /api/generate (raw), llama-server
through its /completion. Rounds alternate ours / anchor; medians (and the spread) over the rounds.
The anchor binary comes from bench/build_llama_server.sh (llama.cpp vendored in the pinned
llama-cpp-python sdist); without it the anchor columns are skipped and the run says so. Like the
anchor, our server runs in a process of its own (``python -m ollama_magic serve``), so the bench's
own HTTP clients do not share its interpreter; ``--in-process`` serves from the bench's process
instead (a notebook's background server), where the clients' Python competes with the server's.

Targets: 4 streams >= 1.8x one stream and >= 0.9x llama-server at 4 streams; TTFT p95 at 4 streams <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
from _models import engine_with

from ollama_magic.engine.runner import physical_cores
from ollama_magic.server import BackgroundServer

MODEL = "gemma3:270m"
LLAMA_SERVER_DIRS = [os.environ.get("LLAMA_SERVER_DIR", ""), "/work/tools/llama-server",
                     str(Path.home() / ".cache/ollama-magic/llama-server")]
FILLER = ("Write a long, detailed story about a small robot who explores an old lighthouse by the sea, "
          "meets the keeper's cat, and learns why the light must never go out.")


OPTIONS = {"temperature": 0, "stop": [], "num_ctx": 2048, "num_thread": physical_cores()}


def prompt(index: int) -> str:
    return f"<start_of_turn>user\nRequest {index} of the benchmark. {FILLER}<end_of_turn>\n<start_of_turn>model\n"


def llama_server_binary() -> Path | None:
    for d in LLAMA_SERVER_DIRS:
        if d and (Path(d) / "READY").exists() and (Path(d) / "bin/llama-server").exists():
            return Path(d) / "bin/llama-server"
    found = shutil.which("llama-server")
    return Path(found) if found else None


def ours_stream(url: str, index: int, tokens: int) -> tuple[float, int]:
    body = {"model": MODEL, "prompt": prompt(index), "raw": True, "stream": True,
            "options": {"num_predict": tokens, **OPTIONS}}
    begin, first, count = time.perf_counter(), None, 0
    with httpx.stream("POST", url + "/api/generate", json=body, timeout=600) as resp:
        for line in resp.iter_lines():
            if not line:
                continue
            chunk = json.loads(line)
            if first is None:
                first = time.perf_counter() - begin
            if chunk.get("done"):
                count = chunk.get("eval_count", 0)
    return first or 0.0, count


def anchor_stream(url: str, index: int, tokens: int) -> tuple[float, int]:
    body = {"prompt": prompt(index), "n_predict": tokens, "temperature": 0, "stream": True, "cache_prompt": True,
            "repeat_penalty": 1.0}
    begin, first, count = time.perf_counter(), None, 0
    with httpx.stream("POST", url + "/completion", json=body, timeout=600) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            chunk = json.loads(line[6:])
            if first is None:
                first = time.perf_counter() - begin
            if chunk.get("stop"):
                count = chunk.get("tokens_predicted", 0)
    return first or 0.0, count


def run(one: Callable[[str, int, int], tuple[float, int]], url: str, clients: int, tokens: int,
        offset: int) -> tuple[float, float, float]:
    results: list[tuple[float, int]] = []
    start = threading.Event()

    def client(i: int) -> None:
        start.wait()
        results.append(one(url, offset + i, tokens))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
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


def start_llama_server(binary: Path, gguf: Path, threads: int, parallel: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
         "-tb", str(threads), "-c", str(2048 * parallel), "-np", str(parallel), "-cb", "-kvu",
         # the engine's own defaults: flash attention "auto" (OLLAMA_FLASH_ATTENTION unset), and on a GPU
         # (bench/gpu.sh) every layer there, as the planner places a model that fits
         "-fa", "auto", "-ngl", os.environ.get("LLAMA_SERVER_GPU_LAYERS", "0")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(proc, "llama-server", lambda: httpx.get(url + "/health", timeout=2).status_code == 200)
    return proc, url


def start_ours(store_root: Path, threads: int) -> tuple[subprocess.Popen, str]:
    """``ollama-magic serve`` in a process of its own, on the bench's store (OLLAMA_NUM_PARALLEL inherited)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(store_root)}
    proc = subprocess.Popen([sys.executable, "-m", "ollama_magic", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def warmed_up() -> bool:
        httpx.post(url + "/api/generate", json={"model": MODEL, "prompt": "warm up", "raw": True, "stream": False,
                                                "options": {"num_predict": 2, **OPTIONS}}, timeout=120)
        return True

    wait_until_serving(proc, "ollama-magic serve", warmed_up)
    return proc, url


def wait_until_serving(proc: subprocess.Popen, name: str, ready: Callable[[], bool]) -> None:
    """Poll ``ready`` (an HTTP error counts as not yet) until it holds; the process dying or 120 s
    passing is an error naming ``name``."""
    deadline = time.monotonic() + 120
    while True:
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.2)


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens per stream")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of ours / anchor")
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--in-process", action="store_true", help="serve ours from this process (BackgroundServer)")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    parallel = int(os.environ.setdefault("OLLAMA_NUM_PARALLEL", "4"))
    binary = llama_server_binary()
    ours: dict[int, list[tuple[float, float, float]]] = {n: [] for n in counts}
    anchor: dict[int, list[tuple[float, float, float]]] = {n: [] for n in counts}
    with engine_with(MODEL) as engine, ExitStack() as stack:
        gguf = engine.store.resolve(MODEL).model_path
        OPTIONS["num_thread"] = args.threads
        if args.in_process:
            engine.generate(MODEL, "warm up", options={"num_predict": 2, **OPTIONS})
            ours_url = stack.enter_context(BackgroundServer(engine, port=0)).url
        else:
            server_proc, ours_url = start_ours(engine.store.root, args.threads)
            stack.callback(lambda: (server_proc.terminate(), server_proc.wait(timeout=30)))
        proc, anchor_url = start_llama_server(binary, gguf, args.threads, 4) if binary else (None, "")
        try:
            offset = 0
            for _ in range(args.rounds):
                for n in counts:
                    ours[n].append(run(ours_stream, ours_url, n, args.tokens, offset))
                    offset += n
                    if proc:
                        anchor[n].append(run(anchor_stream, anchor_url, n, args.tokens, offset))
                        offset += n
        finally:
            if proc:
                proc.terminate()
                proc.wait(timeout=30)
    med = lambda rows, k: statistics.median(r[k] for r in rows)
    single = med(ours[counts[0]], 0)
    print(f"model {MODEL}, {args.tokens} tokens per stream, {args.threads} threads, OLLAMA_NUM_PARALLEL={parallel}, "
          f"ours {'in the bench process' if args.in_process else 'in its own process'}, CPU; medians of {args.rounds} alternating rounds (min-max in brackets)")
    print(f"anchor: {binary if binary else 'llama-server not built (bench/build_llama_server.sh): skipped'}"
          + (" --parallel 4 -c 8192 -kvu -fa auto" if binary else ""))
    print(f"{'streams':<8}{'ours tok/s':>22}{'vs 1 stream':>12}{'llama-server tok/s':>24}{'ours/anchor':>12}"
          f"{'TTFT p50/p95 ours (s)':>24}{'TTFT p50/p95 anchor':>22}")
    for n in counts:
        rate = med(ours[n], 0)
        line = f"{n:<8}{rate:>10.1f} [{spread([r[0] for r in ours[n]]):>9}]{rate / single:>12.2f}"
        if anchor[n]:
            a = med(anchor[n], 0)
            line += f"{a:>12.1f} [{spread([r[0] for r in anchor[n]]):>9}]{rate / a:>12.2f}"
        else:
            line += f"{'':>24}{'':>12}"
        line += f"{med(ours[n], 1):>12.2f} / {med(ours[n], 2):<9.2f}"
        if anchor[n]:
            line += f"{med(anchor[n], 1):>10.2f} / {med(anchor[n], 2):<9.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
