"""``--choices`` against generating the label: the same ~100 reviews, the same model and prompt, once
as label probabilities (``chat_over(..., choices=[...])``: one reading of the prompt per row, the labels
read from its logits) and once the way one would without it (``chat_over`` generating ``num_predict`` 3
greedy tokens, then the first word parsed into a label). Both go through the same thread pool onto the
in-kernel engine, alternated over rounds. Reported: rows/s of each, the ratio, how many generated
answers name no label at all, and how often the two agree where they both give one.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import tempfile
import time

import pandas as pd

from ollama_magic import Engine
from ollama_magic.defaults import register
from ollama_magic.notebook.over import chat_over
from ollama_magic.store import ModelStore

MODEL = "smollm2:135m"
LABELS = ["positive", "negative", "neutral"]
PROMPT = "Is the sentiment of this review positive, negative or neutral? Answer with one word.\n\n{text}"
GOOD = ["arrived early and works perfectly", "is the best purchase I made this year", "exceeded what I hoped"]
BAD = ["broke after two days", "never arrived and support ignored me", "smells of burnt plastic"]
MEH = ["does what it says, nothing more", "is fine for the price", "arrived on the promised day"]


def reviews(n: int) -> pd.Series:
    phrases = [*GOOD, *BAD, *MEH]
    return pd.Series([f"Order {i}: the {['lamp', 'kettle', 'chair', 'phone'][i % 4]} {phrases[i % len(phrases)]}."
                      for i in range(n)])


def no_cache() -> dict[str, bool]:
    """A column cache (if this chat_over has one) would answer the later rounds without the model."""
    return {"cache": False} if "cache" in inspect.signature(chat_over).parameters else {}


def first_label(answer: object) -> str | None:
    words = str(answer).strip().lower().replace(".", " ").replace(",", " ").split()
    return next((w for w in words[:3] if w in LABELS), None)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=3, help="num_predict of the generating path")
    args = parser.parse_args()
    rows = reviews(args.rows)
    print(f"load before: {load()}")
    with tempfile.TemporaryDirectory() as root:
        store = ModelStore(os.path.join(root, "models"))
        register(store, MODEL)
        with Engine(store) as engine:
            common = dict(model=MODEL, backend=engine, progress=False, **no_cache())
            engine.classify(MODEL, messages=[{"role": "user", "content": "warm up"}], choices=LABELS)
            scored, generated, agree, unparsed, samples = [], [], [], [], []
            for _ in range(args.rounds):
                begin = time.perf_counter()
                frame = chat_over(rows, PROMPT, choices=LABELS, **common)
                scored.append(len(rows) / (time.perf_counter() - begin))
                assert frame.label.notna().all()
                begin = time.perf_counter()
                answers = chat_over(rows, PROMPT, options={"temperature": 0, "num_predict": args.tokens}, **common)
                labels = answers.map(first_label)
                generated.append(len(rows) / (time.perf_counter() - begin))
                unparsed.append(int(labels.isna().sum()))
                samples = list(dict.fromkeys(map(str, answers)))[:3]
                named = labels.notna()
                agree.append(float((labels[named] == frame.label[named]).mean()) if named.any() else float("nan"))
    ratios = [s / g for s, g in zip(scored, generated)]
    print(f"{'path':<44}{'rows/s (median)':>16}{'min':>8}{'max':>8}")
    print(f"{'--choices (label probabilities)':<44}{statistics.median(scored):>16.2f}{min(scored):>8.2f}"
          f"{max(scored):>8.2f}")
    print(f"{f'generate {args.tokens} tokens + parse the label':<44}{statistics.median(generated):>16.2f}"
          f"{min(generated):>8.2f}{max(generated):>8.2f}")
    print(f"ratio --choices / generate: median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, "
          f"max {max(ratios):.2f}); {args.rows} rows, {args.rounds} rounds, {MODEL}")
    print(f"generated answers naming no label: {unparsed[-1]} of {args.rows}; where both give one they agree on "
          f"{agree[-1]:.0%}; generated, e.g.: {samples}")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
