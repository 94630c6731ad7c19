"""Are llama.cpp's results for one sequence bit-identical alone and beside others in one batch?

Decodes one prompt greedily alone, then again with 3 other sequences in the same batches (the way the
engine's continuous batching would run it without its seeded-job rule), in one context, and compares
the logits rows bit for bit and the tokens chosen. This is the measurement behind "a seeded request
runs alone" (ollama_magic/engine/decoder.py).
"""

from __future__ import annotations

import argparse

import llama_cpp
import numpy as np

from ollama_magic.engine.llama_context import ContextShape, LlamaContext
from ollama_magic.engine.runner import physical_cores

from _models import engine_with

MODEL = "gemma3:270m"


def greedy(lctx: LlamaContext, prompts: list[list[int]], steps: int) -> list[tuple[list[int], list[np.ndarray]]]:
    """Decode every prompt as its own sequence, all in the same batches; per sequence (tokens, logits rows)."""
    lctx.clear()
    entries, rows = [], []
    for seq, p in enumerate(prompts):
        for i, t in enumerate(p):
            entries.append((t, i, seq, i == len(p) - 1))
            if i == len(p) - 1:
                rows.append(len(entries) - 1)
    out: list[tuple[list[int], list[np.ndarray]]] = [([], []) for _ in prompts]
    pos = [len(p) for p in prompts]
    for _ in range(steps):
        assert lctx.decode(entries) == 0
        nxt = []
        for seq, row in enumerate(rows):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lctx.ctx, row), shape=(lctx.n_vocab,)).copy()
            token = int(np.argmax(logits))
            out[seq][0].append(token)
            out[seq][1].append(logits)
            nxt.append(token)
        entries = [(t, pos[s], s, True) for s, t in enumerate(nxt)]
        rows = list(range(len(prompts)))
        pos = [p + 1 for p in pos]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    with engine_with(MODEL) as engine:
        path = engine.store.resolve(MODEL).model_path
        lctx = LlamaContext(path, ContextShape(num_ctx=1024, parallel=4, num_batch=512, threads=physical_cores(),
                                               num_gpu=0, use_mmap=True))
        tok = lambda s: lctx.tokenize(s.encode(), add_bos=True)  # noqa: E731
        target = tok("Tell me a story about a lighthouse.")
        others = [tok(f"Describe city number {i} in great detail, please.") for i in range(3)]
        alone = greedy(lctx, [target], args.steps)[0]
        beside = greedy(lctx, [target, *others], args.steps)[0]
        lctx.close()
    same_rows = sum(np.array_equal(a, b) for a, b in zip(alone[1], beside[1]))
    max_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(alone[1], beside[1]))
    first_diff = next((i for i, (a, b) in enumerate(zip(alone[0], beside[0])) if a != b), None)
    print(f"model {MODEL}, {args.steps} greedy steps, CPU, {physical_cores()} threads")
    print(f"logits rows bit-identical alone vs beside 3 others: {same_rows}/{args.steps}; max |diff| {max_diff:.3g}")
    print(f"greedy tokens: {'identical' if first_diff is None else f'first differ at step {first_diff}'}")


if __name__ == "__main__":
    main()
