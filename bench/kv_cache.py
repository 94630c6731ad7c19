"""Attention and K/V cache settings (OLLAMA_FLASH_ATTENTION, OLLAMA_KV_CACHE_TYPE) on the embedded models.

1. K/V bytes per slot at f16, q8_0 and q4_0: llama.cpp's own ``llama_kv_cache: size = ...`` lines
   (summed over a model's caches: gemma3 has a full and a sliding-window one), for one slot of
   ``--num-ctx`` tokens, flash attention on (a quantized V cache needs it).
2. Decode tokens/s with flash attention on vs off, at 1 stream and at 4 streams together (aggregate:
   every stream's generated tokens over the wall time of the round, prompt evaluation included: the
   prompts are ~30 tokens), f16 cache, greedy. Rounds alternate on / off; median and spread.
3. Greedy agreement: how many of the first ``--tokens`` tokens of a greedy reply at q8_0 (and q4_0)
   equal the f16 reply, per model and prompt, both with flash attention on; and f16 with flash
   attention off against on, which tells how much of a parting is the cache type's.

Every figure is printed with the 1-minute load average (``os.getloadavg``) taken beside it: these
machines are shared, and a figure means little without it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ollama_magic import Engine
from ollama_magic.engine.llama_context import ContextShape, LlamaContext
from ollama_magic.engine.runner import physical_cores

from _models import engine_with

MODELS = ["smollm2:135m", "gemma3:270m"]
SPEED_MODEL = "gemma3:270m"
TYPES = ["f16", "q8_0", "q4_0"]
PROMPTS = ["Write a short story about a lighthouse keeper.",
           "Explain why the sky is blue to a ten-year-old.",
           "List five uses of a spreadsheet in a small bakery."]
KV_LINE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB .*K \((\w+)\): +[\d.]+ MiB, V \((\w+)\)")


def load_avg() -> str:
    return f"{os.getloadavg()[0]:.2f}"


@contextmanager
def llama_lines() -> Iterator[list[str]]:
    """llama.cpp's log lines while the block runs (they arrive at DEBUG on ``ollama_magic.llama_cpp``)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("ollama_magic.llama_cpp")
    handler, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def kv_bytes(path: Path, kind: str, num_ctx: int) -> tuple[int, set[str]]:
    """Bytes of one slot's K/V cache as llama.cpp allocated it, and the types its log names."""
    shape = ContextShape(num_ctx=num_ctx, parallel=1, num_batch=512, threads=physical_cores(), num_gpu=0,
                         use_mmap=True, flash_attn="on", kv_cache_type=kind)
    with llama_lines() as lines:
        LlamaContext(path, shape).close()
    found = [KV_LINE.search(line) for line in lines]
    sizes = [m for m in found if m]
    return round(sum(float(m.group(1)) for m in sizes) * 2**20), {t for m in sizes for t in m.group(2, 3)}


@contextmanager
def settings(flash: str, kind: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("OLLAMA_FLASH_ATTENTION", "OLLAMA_KV_CACHE_TYPE")}
    os.environ["OLLAMA_FLASH_ATTENTION"], os.environ["OLLAMA_KV_CACHE_TYPE"] = flash, kind
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def greedy(engine: Engine, model: str, prompt: str, n: int) -> list[int]:
    r = engine.generate(model, prompt, options={"temperature": 0, "num_predict": n, "stop": [], "num_ctx": 2048})
    return list(r.context[len(r.context) - r.eval_count:])


def agreement(a: list[int], b: list[int]) -> str:
    """Tokens equal from the start; ``=N`` when both replies are the same N tokens."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return str(i)
    return f"={len(a)}" if len(a) == len(b) else str(min(len(a), len(b)))


def streams_rate(engine: Engine, streams: int, n: int) -> float:
    """Aggregate generated tokens/s of ``streams`` greedy requests sent together."""
    counts: list[int] = []

    def one(i: int) -> None:
        r = engine.generate(SPEED_MODEL, f"Request {i}. {PROMPTS[0]}",
                            options={"temperature": 0, "num_predict": n, "stop": [], "num_ctx": 2048,
                                     "num_thread": physical_cores()})
        counts.append(r.eval_count)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-ctx", type=int, default=4096, help="tokens of the one slot sized in part 1")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per reply (parts 2 and 3)")
    parser.add_argument("--runs", type=int, default=2, help="rounds of part 2 (at most 3)")
    parser.add_argument("--skip", default="", help="parts to leave out, e.g. 2 or 1,3")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    runs = max(1, min(3, args.runs))
    print(f"{physical_cores()} threads, CPU; load = 1-minute load average beside each figure", flush=True)

    with engine_with(*MODELS) as engine:
        if "1" not in skip:
            print(f"\n1. K/V cache of one slot of {args.num_ctx} tokens (llama.cpp's log), flash attention on")
            print(f"{'model':<16}{'type':<7}{'MiB':>9}{'bytes/token':>13}{'vs f16':>8}  types logged  load")
            for model in MODELS:
                path = engine.store.find(model).model_path
                f16 = 0
                for kind in TYPES:
                    size, logged = kv_bytes(path, kind, args.num_ctx)
                    f16 = f16 or size
                    print(f"{model:<16}{kind:<7}{size / 2**20:>9.2f}{size / args.num_ctx:>13.0f}"
                          f"{size / f16:>8.3f}  {','.join(sorted(logged)):<12}  {load_avg()}", flush=True)

        if "2" not in skip:
            print(f"\n2. decode tokens/s, {SPEED_MODEL}, f16 cache, {args.tokens} tokens per stream, "
                  f"median of {runs} rounds (min-max)")
            rates: dict[tuple[str, int], list[float]] = {}
            loads: dict[tuple[str, int], list[str]] = {}
            for _ in range(runs):
                for flash in ("1", "0"):
                    with settings(flash, "f16"):
                        engine.generate(SPEED_MODEL, "warm up", options={"num_predict": 1, "num_ctx": 2048,
                                                                         "num_thread": physical_cores()})
                        for streams in (1, 4):
                            rates.setdefault((flash, streams), []).append(streams_rate(engine, streams, args.tokens))
                            loads.setdefault((flash, streams), []).append(load_avg())
                    engine.unload(SPEED_MODEL)
            print(f"{'streams':<9}{'FA on':>22}{'FA off':>22}{'on/off':>8}  load (on; off)")
            for streams in (1, 4):
                on, off = rates[("1", streams)], rates[("0", streams)]
                cell = [f"{statistics.median(r):.1f} ({min(r):.1f}-{max(r):.1f})" for r in (on, off)]
                print(f"{streams:<9}{cell[0]:>22}{cell[1]:>22}{statistics.median(on) / statistics.median(off):>8.3f}"
                      f"  {','.join(loads[('1', streams)])}; {','.join(loads[('0', streams)])}", flush=True)

        if "3" not in skip:
            print(f"\n3. greedy agreement with f16 (flash attention on), first {args.tokens} tokens "
                  "(=N: the same N tokens)")
            print(f"{'model':<16}{'prompt':>7}{'q8_0':>7}{'q4_0':>7}{'f16 FA off':>12}  load")
            for model in MODELS:
                replies: dict[tuple[str, str], list[list[int]]] = {}
                for flash, kind in (("1", "f16"), ("1", "q8_0"), ("1", "q4_0"), ("0", "f16")):
                    with settings(flash, kind):
                        replies[(flash, kind)] = [greedy(engine, model, p, args.tokens) for p in PROMPTS]
                    engine.unload(model)
                base = replies[("1", "f16")]
                for i in range(len(PROMPTS)):
                    cells = [agreement(base[i], replies[key][i]) for key in (("1", "q8_0"), ("1", "q4_0"), ("0", "f16"))]
                    print(f"{model:<16}{i + 1:>7}{cells[0]:>7}{cells[1]:>7}{cells[2]:>12}  {load_avg()}", flush=True)


if __name__ == "__main__":
    main()
