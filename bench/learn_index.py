"""``%ollama learn``'s index (knowledge/index.py, LanceDB) at 100,000 chunks: insert, search p50/p95 at
k=10, process memory, a rebuild against the incremental update of one file; then a small end-to-end
learn on the real all-minilm for chunks/s.

The store part uses synthetic unit vectors (384-d, all-minilm's width) so it measures the store, not the
model. Every figure is printed as it is measured, with ``uptime``'s load; 3 repetitions.

    python bench/learn_index.py [--chunks 100000] [--queries 200] [--real 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 384
SOURCES = 1000  # 100 chunks per file at 100,000 chunks


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def rss() -> str:
    return f"{psutil.Process().memory_info().rss / 2**20:.0f} MiB"


def rows_for(source: str, n: int, rng: np.random.Generator, start: int = 0) -> tuple[dict, np.ndarray]:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = {"id": [f"{source}#{i}" for i in range(start, start + n)], "source": [source] * n, "kind": ["file"] * n,
            "position": [""] * n, "first_line": list(range(n)), "last_line": list(range(n)),
            "text": [f"chunk {i} of {source} " + "lorem ipsum " * 40 for i in range(n)], "digest": ["d"] * n}
    return rows, vectors


def store_round(chunks: int, queries: int, rep: int) -> None:
    from ollama_magic.knowledge.index import Index

    rng = np.random.default_rng(rep)
    per = chunks // SOURCES
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        index = Index.create("bench", model="synthetic", identity="x", dim=DIM, root=root)
        start = time.perf_counter()
        for block in range(0, SOURCES, 100):  # 100 files a write, as a learn of many files would batch
            parts = [rows_for(f"/docs/f{s}.md", per, rng) for s in range(block, block + 100)]
            rows = {k: [v for p in parts for v in p[0][k]] for k in parts[0][0]}
            index.add(rows, np.concatenate([p[1] for p in parts]))
        insert = time.perf_counter() - start
        print(f"[rep {rep}] insert {index.count()} chunks: {insert:.1f} s ({index.count() / insert:.0f} chunks/s), "
              f"{index.bytes() / 2**20:.0f} MiB on disk, rss {rss()}, {load()}", flush=True)
        start = time.perf_counter()
        index.compact()
        print(f"[rep {rep}] compact: {time.perf_counter() - start:.1f} s, {load()}", flush=True)
        qs = rng.standard_normal((queries, DIM)).astype(np.float32)
        times = []
        for q in qs:
            t = time.perf_counter()
            found = index.search(q, 10)
            times.append(time.perf_counter() - t)
            assert len(found) == 10
        p50, p95 = np.percentile(times, 50) * 1000, np.percentile(times, 95) * 1000
        print(f"[rep {rep}] search k=10 over {queries} queries: p50 {p50:.1f} ms, p95 {p95:.1f} ms, rss {rss()}, "
              f"{load()}", flush=True)
        RESULTS.setdefault("p50", []).append(p50)
        RESULTS.setdefault("p95", []).append(p95)
        RESULTS.setdefault("insert", []).append(insert)
        start = time.perf_counter()
        rows, vectors = rows_for("/docs/f7.md", per, rng, start=1)
        index.replace("/docs/f7.md", rows, vectors)
        update = time.perf_counter() - start
        print(f"[rep {rep}] incremental update of one file ({per} chunks): {update * 1000:.0f} ms, {load()}",
              flush=True)
        RESULTS.setdefault("update", []).append(update)


RESULTS: dict[str, list[float]] = {}


def real_round(count: int) -> None:
    """End to end on all-minilm: ``count`` paragraphs, learned cold (no column cache), then again unchanged."""
    os.environ["OLLAMA_MAGIC_CACHE"] = tempfile.mktemp(suffix=".sqlite")
    from ollama_magic.defaults import register_all
    from ollama_magic.engine import Engine
    from ollama_magic.knowledge import learn
    from ollama_magic.knowledge.sources import from_column
    from ollama_magic.store import ModelStore

    import pandas as pd

    with tempfile.TemporaryDirectory() as folder:
        store = ModelStore(Path(folder) / "models")
        register_all(store)
        texts = pd.Series([f"Paragraph {i}: the item numbered {i} is stored in aisle {i % 37} of warehouse "
                           f"{i % 11}, beside the {['red', 'blue', 'green'][i % 3]} shelves." for i in range(count)])
        with Engine(store) as engine:
            engine.embed("all-minilm", ["warm up"])
            t = time.perf_counter()
            report = learn(engine, "real", [from_column("texts", texts)], root=Path(folder) / "ix", progress=False)
            took = time.perf_counter() - t
            print(f"real all-minilm: {report.chunks_added} chunks learned in {took:.1f} s "
                  f"({report.chunks_added / took:.1f} chunks/s end to end), rss {rss()}, {load()}", flush=True)
            t = time.perf_counter()
            again = learn(engine, "real", [from_column("texts", texts)], root=Path(folder) / "ix", progress=False)
            print(f"real all-minilm: unchanged again in {time.perf_counter() - t:.2f} s ({again.embedded} embedded), "
                  f"{load()}", flush=True)
            t = time.perf_counter()
            report = learn(engine, "real", [from_column("texts", texts)], root=Path(folder) / "ix", progress=False,
                           rebuild=True)
            print(f"real all-minilm: rebuild (vectors from the column cache) in {time.perf_counter() - t:.1f} s "
                  f"({report.cached} cached), {load()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--real", type=int, default=200, help="paragraphs for the end-to-end run (0: skip)")
    args = parser.parse_args()
    print(f"start: {load()}, {os.cpu_count()} CPUs", flush=True)
    for rep in range(1, args.reps + 1):
        store_round(args.chunks, args.queries, rep)
    for name, values in RESULTS.items():
        print(f"{name}: median {statistics.median(values):.3f}, min {min(values):.3f}, max {max(values):.3f} "
              f"over {len(values)} reps", flush=True)
    if args.real:
        real_round(args.real)


if __name__ == "__main__":
    main()
