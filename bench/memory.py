"""Memory: the kernel's RSS with each default model loaded vs what it should cost (the GGUF file plus
its KV cache, as /api/ps reports it), and RSS across many load/unload cycles.

Targets: loaded RSS <= file + KV cache + 200 MB; no growth across cycles (we report the growth
between cycle 20 and the last one, after allocator warm-up).
"""

from __future__ import annotations

import argparse
import gc
import resource

from ollama_magic.defaults import EMBEDDED_MODELS

from _models import engine_with


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    args = parser.parse_args()
    rows = []
    with engine_with(*EMBEDDED_MODELS) as engine:
        engine.list()
        for name, call in (("gemma3:270m", lambda: engine.generate("gemma3:270m", "hi", options={"num_predict": 1})),
                           ("all-minilm:latest", lambda: engine.embed("all-minilm", "hi"))):
            gc.collect()
            before = rss_mb()
            call()
            [entry] = [m for m in engine.ps().models if m.model == name]
            loaded = rss_mb() - before
            expected = entry.size / 1e6
            rows.append((f"RSS of {name} loaded (MB) vs file+KV", loaded, expected, loaded - expected, "<= +200 MB"))
            engine.unload(name)
        samples = []
        for cycle in range(args.cycles):
            engine.generate("gemma3:270m", "hi", keep_alive=0, options={"num_predict": 1})
            samples.append(rss_mb())
        warm = min(19, len(samples) - 1)
        growth = samples[-1] - samples[warm]
        rows.append((f"RSS growth, cycles {warm + 1}..{args.cycles} (MB)", growth, 0.0, growth, "~0 (no leak)"))
    print(f"{args.cycles} load/unload cycles of gemma3:270m; RSS from /proc/self/statm")
    print(f"{'benchmark':<44}{'ours':>12}{'anchor':>12}{'diff':>9}  target")
    for label, ours, anchor, diff, target in rows:
        print(f"{label:<44}{ours:>12.1f}{anchor:>12.1f}{diff:>+9.1f}  {target}")


if __name__ == "__main__":
    main()
