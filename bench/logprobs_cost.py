"""What ``logprobs`` costs: decode tokens/s with ``logprobs: true`` (and with 20 alternatives) vs the
same greedy request without, alternating in one run on gemma3:270m (a 262k-token vocabulary, so the
numpy pass over each logits row is as large as it gets among small models).

Ratios, not absolute numbers: the machine is shared. Each figure is the median of alternating runs,
with the spread printed beside it.
"""

from __future__ import annotations

import argparse
import statistics

from ollama_magic import Engine
from ollama_magic.engine.runner import physical_cores

from _models import engine_with

MODEL = "gemma3:270m"
PROMPT = "Write a long, detailed essay about the history of the printing press."


def rate(engine: Engine, n: int, **extra: object) -> float:
    r = engine.generate(MODEL, PROMPT, options={"temperature": 0, "seed": 1, "num_predict": n, "stop": []}, **extra)
    return r.eval_count / (r.eval_duration / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    plain, probs, top20 = [], [], []
    with engine_with(MODEL) as engine:
        engine.generate(MODEL, "warm up", options={"num_predict": 4})
        for _ in range(args.runs):
            plain.append(rate(engine, args.tokens))
            probs.append(rate(engine, args.tokens, logprobs=True))
            top20.append(rate(engine, args.tokens, logprobs=True, top_logprobs=20))
    base = statistics.median(plain)
    print(f"model {MODEL}, {physical_cores()} threads, CPU, greedy, {args.tokens} tokens; median of {args.runs} runs")
    print(f"{'benchmark':<44}{'ours':>10}{'anchor':>10}{'ratio':>8}  spread of the ratio")
    for label, values in (("logprobs: true, tokens/s vs without", probs),
                          ("top_logprobs: 20, tokens/s vs without", top20)):
        ratios = [v / p for v, p in zip(values, plain)]
        print(f"{label:<44}{statistics.median(values):>10.1f}{base:>10.1f}{statistics.median(values) / base:>8.3f}"
              f"  {min(ratios):.3f}-{max(ratios):.3f}")


if __name__ == "__main__":
    main()
