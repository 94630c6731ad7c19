"""A shared instruction evaluated once: ``%chat --over`` rows behind a ~600-token prefix (instructions
and few-shot examples) with prefix sharing, against today's engine without it (each slot reads the
prefix itself, then reuses its own cells) and against a Python loop over ``Engine.chat``, same rows and
options, alternated over rounds in one process. Then the same for HTTP: concurrent ``/api/chat``
requests sharing one long system prompt, with and without sharing.

Reported: rows/s of each (median, min, max over rounds), the ratio with/without sharing, and the
tokens the engine evaluated (``tokens_decoded``), which shows the prefix read once or once per slot.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd

from _models import engine_with
from ollama_magic.engine.decoder import Decoder
from ollama_magic.notebook.over import chat_over

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon").split()


def instruction(target_tokens: int, count) -> str:  # noqa: ANN001 - the model's token counter
    text = "You label customer reviews as positive, negative or neutral, in one word. Examples:\n"
    i = 0
    while count(text) < target_tokens:
        text += f"Review: the {WORDS[i % 20]} {WORDS[i * 7 % 20]} was {'great' if i % 2 else 'broken'}. Label: " \
                f"{'positive' if i % 2 else 'negative'}\n"
        i += 1
    return text


def rows_of(n: int) -> pd.Series:
    return pd.Series([f"Review {i}: the {WORDS[i % 20]} {WORDS[i * 3 % 20]} arrived {i % 9} days late, box "
                      f"dented, but it works fine." for i in range(n)])


def decoded(engine, model: str) -> int:  # noqa: ANN001
    return sum(s.tokens_decoded for s in engine.stats() if s.name == model and not s.embedding)


def run_over(engine, model: str, prefix: str, rows: pd.Series, options: dict) -> float:  # noqa: ANN001
    extra = {"cache": False} if "cache" in inspect.signature(chat_over).parameters else {}
    begin = time.perf_counter()
    out = chat_over(rows, prefix + "\nReview: {text}\nLabel:", model=model, backend=engine, options=options,
                    progress=False, **extra)
    assert out.map(lambda v: isinstance(v, str)).all()
    return len(rows) / (time.perf_counter() - begin)


def run_loop(engine, model: str, prefix: str, rows: pd.Series, options: dict) -> float:  # noqa: ANN001
    begin = time.perf_counter()
    for text in rows:
        engine.chat(model, [{"role": "user", "content": f"{prefix}\nReview: {text}\nLabel:"}], options=options)
    return len(rows) / (time.perf_counter() - begin)


def run_http(url: str, model: str, prefix: str, rows: pd.Series, options: dict) -> float:
    def one(text: str) -> None:
        body = {"model": model, "stream": False, "options": options,
                "messages": [{"role": "system", "content": prefix}, {"role": "user", "content": text}]}
        httpx.post(f"{url}/api/chat", json=body, timeout=600).raise_for_status()

    begin = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, rows))
    return len(rows) / (time.perf_counter() - begin)


def summary(name: str, values: list[float]) -> str:
    return f"{name:<34}{statistics.median(values):>10.2f}{min(values):>8.2f}{max(values):>8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3:270m")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--loop-rows", type=int, default=40, help="rows for the Python loop (it is slow)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefix-tokens", type=int, default=600)
    parser.add_argument("--tokens", type=int, default=16, help="num_predict per row")
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    options = {"temperature": 0, "num_predict": args.tokens, "stop": []}
    rows = rows_of(args.rows)
    results: dict[str, list[float]] = {"shared": [], "unshared": [], "loop": [], "http shared": [], "http unshared": []}
    tokens: dict[str, int] = {}
    with engine_with(args.model) as engine:
        def count(text: str) -> int:
            return len(engine.tokenize(args.model, text).tokens)

        prefix = instruction(args.prefix_tokens, count)
        prefix_tokens = count(prefix)
        row_tokens = statistics.mean(count(t) for t in rows)
        engine.chat(args.model, [{"role": "user", "content": "warm up"}], options=options)
        for _ in range(args.rounds):
            for share in (True, False):
                Decoder.share_prefixes = share
                engine.unload(args.model)  # every run starts on an empty cache
                before = decoded(engine, args.model)
                name = "shared" if share else "unshared"
                results[name].append(run_over(engine, args.model, prefix, rows, options))
                tokens[name] = decoded(engine, args.model) - before
                print(f"  {name}: {results[name][-1]:.2f} rows/s, {tokens[name]} tokens evaluated", flush=True)
            Decoder.share_prefixes = True
            engine.unload(args.model)
            results["loop"].append(run_loop(engine, args.model, prefix, rows[: args.loop_rows], options))
            print(f"  loop: {results['loop'][-1]:.2f} rows/s", flush=True)
        if not args.no_http:
            from ollama_magic.server.background import BackgroundServer

            with BackgroundServer(engine=engine, port=0) as server:
                for _ in range(args.rounds):
                    for share in (True, False):
                        Decoder.share_prefixes = share
                        engine.unload(args.model)
                        name = "http shared" if share else "http unshared"
                        results[name].append(run_http(server.url, args.model, prefix, rows, options))
                        print(f"  {name}: {results[name][-1]:.2f} rows/s", flush=True)
            Decoder.share_prefixes = True
    print(f"{args.model}: a prefix of {prefix_tokens} tokens, rows of ~{row_tokens:.0f} "
          f"tokens, {args.tokens} tokens out, {args.rows} rows ({args.loop_rows} for the loop), {args.rounds} rounds")
    print(f"{'path':<34}{'rows/s':>10}{'min':>8}{'max':>8}")
    for name, label in [("shared", "--over, prefix shared"), ("unshared", "--over, today's engine"),
                        ("loop", "Python loop over Engine.chat"), ("http shared", "HTTP x4, prefix shared"),
                        ("http unshared", "HTTP x4, today's engine")]:
        if results[name]:
            print(summary(label, results[name]))
    ratios = [a / b for a, b in zip(results["shared"], results["unshared"])]
    print(f"--over shared / today's: median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f});"
          f" vs the loop: {statistics.median(results['shared']) / statistics.median(results['loop']):.2f}x")
    if results["http shared"]:
        http = [a / b for a, b in zip(results["http shared"], results["http unshared"])]
        print(f"HTTP shared / today's: median {statistics.median(http):.2f}x (min {min(http):.2f}, max {max(http):.2f})")
    print(f"tokens evaluated for the column: shared {tokens['shared']}, today's {tokens['unshared']}")


if __name__ == "__main__":
    main()
