"""The column cache: a ``%chat --over`` column re-run from the cache vs its first run, and the same for
``%embed``. Target (issue 25): a 1,000-row re-run >= 50x faster than the first run.

The first run asks every row (the model already loaded and warm, so its load time is not counted in
our favour); the re-run is what a notebook's "run all" does the next day: a new Engine (a fresh
kernel, nothing loaded) over the same store and cache file. Both through the Python API
(``chat_over``/``embed_frame``, what the magics call), greedy and unseeded so the first run is
batched, in a temp store and a temp cache, never the user's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import pandas as pd

from ollama_magic import Engine
from ollama_magic.defaults import register
from ollama_magic.notebook.embeddings import embed_frame
from ollama_magic.notebook.over import chat_over
from ollama_magic.store import ModelStore

CHAT = "gemma3:270m"
EMBED = "all-minilm:latest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=8, help="num_predict per row")
    parser.add_argument("--texts", type=int, default=10_000, help="texts for the %%embed row")
    args = parser.parse_args()
    rows = pd.Series([f"Review {i}: the product number {i} arrived {i % 7} days late but works."
                      for i in range(args.rows)])
    texts = [f"note {i}: shipment {i % 97} for customer {i // 97}" for i in range(args.texts)]
    options = {"temperature": 0, "num_predict": args.tokens}
    with tempfile.TemporaryDirectory() as root:
        os.environ["OLLAMA_MAGIC_CACHE"] = os.path.join(root, "cache.sqlite")
        store = ModelStore(os.path.join(root, "models"))
        for name in (CHAT, EMBED):
            register(store, name)
        timings: dict[str, list[float]] = {}
        with Engine(store) as engine:
            chat_over(["warm up"], "Hi {text}", model=CHAT, backend=engine, options=options, progress=False, cache=False)
            embed_frame(engine, texts[:64], model=EMBED, progress=False, cache=False)
            start = time.perf_counter()
            first = chat_over(rows, "Summarize in five words: {text}", model=CHAT, backend=engine, options=options,
                              progress=False)
            timings["chat"] = [time.perf_counter() - start]
            start = time.perf_counter()
            embed_frame(engine, texts, model=EMBED, progress=False)
            timings["embed"] = [time.perf_counter() - start]
        with Engine(store) as engine:  # the next day: a fresh kernel, nothing loaded
            start = time.perf_counter()
            again = chat_over(rows, "Summarize in five words: {text}", model=CHAT, backend=engine, options=options,
                              progress=False)
            timings["chat"].append(time.perf_counter() - start)
            start = time.perf_counter()
            embed_frame(engine, texts, model=EMBED, progress=False)
            timings["embed"].append(time.perf_counter() - start)
            assert not engine.ps().models, "the re-run loaded a model"
        assert again.equals(first) and again.attrs["ollama_magic"]["cached"] == args.rows
    print(f"{'benchmark':<58}{'first (s)':>10}{'re-run (s)':>11}{'ratio':>9}  target")
    for name, label in (("chat", f"%chat --over, {args.rows} rows, {args.tokens} tokens each ({CHAT})"),
                        ("embed", f"%embed, {args.texts} texts ({EMBED})")):
        first_s, again_s = timings[name]
        print(f"{label:<58}{first_s:>10.2f}{again_s:>11.3f}{first_s / again_s:>8.0f}x  {'>= 50x' if name == 'chat' else ''}")


if __name__ == "__main__":
    main()
