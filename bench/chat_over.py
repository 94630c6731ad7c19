"""``%chat --over`` on a column of 200 rows against the anchor a user would write without it: a
Python loop calling ``%chat --no-history`` once per row, same model, same options, same rows, in one
IPython shell, alternated over several rounds. Reported: rows/s of each and the ratio.

The --over path submits up to 4 rows at once to the engine (its parallel sequences per model) and
asks each distinct text once; the rows here are all distinct, so any speed-up is the engine's
continuous batching (OLLAMA_NUM_PARALLEL sequences decoded in one llama_decode per step). Target: >= 2x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import pandas as pd

from ollama_magic.defaults import register
from ollama_magic.store import ModelStore

MODEL = "gemma3:270m"
# No --seed: a seeded request runs alone in the engine (docs/BENCHMARKS.md, "Seeds and batching"), so a
# seeded column is reproducible but not batched. Greedy (temperature 0) rows are batched.
FLAGS = "--num-predict {tokens} --temperature 0"


def shell_with_models(root: str):  # noqa: ANN201 - an IPython shell
    from IPython.testing.globalipapp import start_ipython

    store = ModelStore(os.path.join(root, "models"))
    register(store, MODEL)
    os.environ["OLLAMA_MODELS"] = str(store.root)
    os.environ["OLLAMA_MAGIC_CONVERSATIONS"] = os.path.join(root, "conversations")
    shell = start_ipython()
    shell.user_ns["__session__"] = os.path.join(root, "bench.ipynb")
    shell.extension_manager.load_extension("ollama_magic")
    shell.run_line_magic("config", "OllamaMagics.stream = False")
    return shell


def loop(shell, rows: pd.Series, flags: str) -> float:  # noqa: ANN001
    begin = time.perf_counter()
    for text in rows:
        shell.run_line_magic("chat", f"--no-history -m {MODEL} {flags} Summarize in five words: {text}")
    return len(rows) / (time.perf_counter() - begin)


def over(shell, rows: pd.Series, flags: str) -> float:  # noqa: ANN001
    shell.user_ns["rows"] = rows
    begin = time.perf_counter()
    # --no-cache: every round asks every row (bench/column_cache.py measures the cached re-run)
    result = shell.run_line_magic("chat", f'--over rows -m {MODEL} --no-cache {flags} "Summarize in five words: {{text}}"')
    assert result.notna().all()
    return len(rows) / (time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=8, help="num_predict per row")
    args = parser.parse_args()
    flags = FLAGS.format(tokens=args.tokens)
    rows = pd.Series([f"Review {i}: the product number {i} arrived {i % 7} days late but works." for i in range(args.rows)])
    with tempfile.TemporaryDirectory() as root:
        shell = shell_with_models(root)
        shell.run_line_magic("chat", f"--no-history -m {MODEL} {flags} warm up")
        loops, overs = [], []
        for _ in range(args.rounds):
            loops.append(loop(shell, rows, flags))
            overs.append(over(shell, rows, flags))
        shell.extension_manager.unload_extension("ollama_magic")
    ratios = [o / lp for o, lp in zip(overs, loops)]
    print(f"{'path':<28}{'rows/s (median)':>16}{'min':>8}{'max':>8}")
    print(f"{'loop over %chat':<28}{statistics.median(loops):>16.2f}{min(loops):>8.2f}{max(loops):>8.2f}")
    print(f"{'%chat --over':<28}{statistics.median(overs):>16.2f}{min(overs):>8.2f}{max(overs):>8.2f}")
    print(f"ratio --over / loop: median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f}), "
          f"{args.rows} rows, {args.tokens} tokens per row, {args.rounds} rounds")


if __name__ == "__main__":
    main()
